//! End-to-end test harness: a node on free ports with a temporary data
//! directory, ffmpeg publishers, timed HTTP, and the parsers the checks use.
//!
//! Every child process is killed on Drop. The node's stderr goes to a file;
//! when a test panics, the tail of it (and of the publishers' logs) is
//! printed so that the failure can be read without re-running.
//!
//! Each test binary compiles this whole module but uses only part of it, so
//! the one `allow(dead_code, unused_imports)` below covers the module and all
//! its submodules (rather than an allow on every helper).
//!
//! - `node`: the node under test ([`Node`], its CLI and channels);
//! - `publisher`: live-paced ffmpeg RTMP publishers ([`Publisher`]);
//! - `ffmpeg9`: FFmpeg 9 clips sent with `-c copy` (Enhanced RTMP, multitrack);
//! - `http`: timed HTTP requests ([`Http`], [`Resp`]);
//! - `hls`: fetching and strictly parsing media playlists;
//! - `metrics`: the Prometheus text format ([`Metrics`]);
//! - `findings`: rule violations collected over a run ([`Findings`]);
//! - `playback`: what a player page's report must show ([`check_playback`]);
//! - `timeline`: every part's and segment's media time and date, per
//!   rendition, checked for holes and misalignment ([`TimelineProbe`]);
//! - `playlist`, `fmp4`: the parsers the checks use;
//! - `postgres`: a PostgreSQL server in a temporary directory ([`PgServer`]);
//! - `prometheus`: the metrics `src/metrics.rs` defines, the ones a PromQL
//!   expression reads, and a real Prometheus server ([`prometheus::PromServer`]).
#![allow(dead_code, unused_imports)]

pub mod fmp4;
pub mod playlist;
pub mod prometheus;

mod ffmpeg9;
mod findings;
mod hls;
mod http;
mod metrics;
mod netns;
mod node;
mod playback;
mod postgres;
mod process;
mod publisher;
mod s3;
mod timeline;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use self::postgres::PgServer;
pub use ffmpeg9::{CopyPublisher, STUDIO_X264, Stream, clip, clip_stream, ffmpeg9};
pub use findings::Findings;
pub use hls::{Fetched, fetch_blocking, fetch_media, wait_all, wait_playlist};
pub use http::{Http, Resp, raw_get_status};
pub use metrics::{Metrics, Sample};
pub use netns::Netns;
pub use node::{Channel, HttpLimits, Node, NodeConfig};
pub use playback::{Playback, check_playback, play_hlsjs, play_hlsjs_codec, run_page_script};
pub use playlist::{MediaPlaylist, Multivariant, parse_media, parse_multivariant, resolve};
pub use process::{cpu_seconds, open_fds, raise_open_files, status_bytes, status_field};
pub use publisher::{PubOpts, Publisher};
pub use s3::{S3Server, s3s_fs_bin};
pub use timeline::{Timeline, TimelineProbe};

/// Tests of one binary that each keep a live stream (and often a browser)
/// busy in real time starve each other two at a time on a 2-core machine,
/// and a player that measures stalls and latency must not pay for its
/// neighbour: they take turns.
static ONE_LIVE_TEST_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_LIVE_TEST_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The repository root: where `node_modules/` and `tests/player/` are.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Panics with a clear message when a browser test cannot run here: it
/// needs Debian's Chromium, hls.js and playwright-core from npm, and node.
pub fn require_browser() {
    let root = repo_root();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "browser test needs Chromium at {chromium}: install it (apt-get install chromium) or run `make test`"
    );
    for m in [
        "node_modules/hls.js/dist/hls.min.js",
        "node_modules/playwright-core/package.json",
    ] {
        assert!(
            root.join(m).exists(),
            "browser test needs {m}: run `npm install` at the repo root (or `make test`)"
        );
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        node_ok,
        "browser test needs node (Node.js 18+) on PATH: run `make test` after installing it"
    );
}

/// The fatal errors in a browser script's report (`errors`: hls.js ERROR events).
pub fn hlsjs_fatal_errors(rep: &serde_json::Value) -> Vec<serde_json::Value> {
    rep["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["fatal"] == true)
        .cloned()
        .collect()
}

/// Path of the node binary under test.
pub fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rungs"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Polls `f` every `every` until it returns Some or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// How long until `cond` holds, polling every 20 ms, up to `limit`.
pub fn time_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    wait_for(limit, Duration::from_millis(20), || cond().then_some(())).map(|()| t0.elapsed())
}

fn tail(path: &Path, lines: usize) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    // ffmpeg rewrites its progress line with '\r': count those as lines too.
    let v: Vec<&str> = s
        .split(['\n', '\r'])
        .filter(|l| !l.trim().is_empty())
        .collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

pub fn tmp_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

/// Runs ffprobe with `args` on `file`, returning (success, stdout JSON, stderr).
pub fn ffprobe_json(file: &Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(file)
        .output()
        .expect("run ffprobe");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// p-quantile (0..1) of a slice, nearest-rank.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}
