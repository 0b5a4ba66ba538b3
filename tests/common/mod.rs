//! End-to-end test harness: a node on free ports with a temporary data
//! directory, ffmpeg publishers, timed HTTP, and the parsers the checks use.
//!
//! Every child process is killed on Drop. The node's stderr goes to a file;
//! when a test panics, the tail of it (and of the publishers' logs) is
//! printed so that the failure can be read without re-running.
#![allow(dead_code, unused_imports)]

pub mod fmp4;
pub mod playlist;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use playlist::{MediaPlaylist, Multivariant, parse_media, parse_multivariant, resolve};

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

// ---------------------------------------------------------------- node

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub part_target_s: f64,
    pub segment_target_s: f64,
    pub reconnect_grace_s: f64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            part_target_s: 0.2,
            segment_target_s: 2.0,
            reconnect_grace_s: 10.0,
        }
    }
}

pub struct Node {
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    pub rtmp_port: u16,
    pub http_port: u16,
    pub log_path: PathBuf,
    pub token: String,
    pub http: Http,
    bin: PathBuf,
    /// Logs of other processes to print when the test fails.
    extra_logs: Arc<Mutex<Vec<PathBuf>>>,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub stream_key: String,
    pub json: serde_json::Value,
}

impl Channel {
    pub fn from_json(v: serde_json::Value) -> Channel {
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("channel JSON has no string {k:?}: {v}"))
                .to_string()
        };
        Channel {
            id: s("id"),
            name: s("name"),
            stream_key: s("stream_key"),
            json: v,
        }
    }
}

impl Node {
    /// Starts a node in a fresh temporary data directory.
    pub fn start(cfg: NodeConfig) -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("rungs-e2e-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut n = Node::start_in(&dir, cfg, &node_bin());
        n._tmp = Some(tmp);
        n
    }

    /// Starts a node on `dir` (kept by the caller), on fresh ports.
    pub fn start_in(dir: &Path, cfg: NodeConfig, bin: &Path) -> Node {
        // A free port can be taken by a parallel test between our probe and
        // the node's bind: retry on fresh ports when the node reports that.
        for _ in 0..2 {
            if let Some(n) = Node::try_start_in(dir, cfg.clone(), bin, true) {
                return n;
            }
        }
        Node::try_start_in(dir, cfg, bin, false).unwrap()
    }

    fn try_start_in(
        dir: &Path,
        cfg: NodeConfig,
        bin: &Path,
        retry_on_addr_in_use: bool,
    ) -> Option<Node> {
        assert!(
            bin.exists(),
            "node binary {} is missing: build it (`cargo build`, or run `make test`)",
            bin.display()
        );
        fs::create_dir_all(dir).unwrap();
        let rtmp_port = free_port();
        let http_port = free_port();
        let cfg_path = dir.join("e2e-config.toml");
        fs::write(
            &cfg_path,
            format!(
                "[hls]\npart_target_s = {}\nsegment_target_s = {}\n\n[ingest]\nreconnect_grace_s = {}\n",
                cfg.part_target_s, cfg.segment_target_s, cfg.reconnect_grace_s
            ),
        )
        .unwrap();
        // A node restarted on the same dir appends to a new log file.
        let mut k = 0;
        let log_path = loop {
            let p = dir.join(format!("node-{k}.log"));
            if !p.exists() {
                break p;
            }
            k += 1;
        };
        let log = File::create(&log_path).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--rtmp-addr")
            .arg(format!("127.0.0.1:{rtmp_port}"))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut node = Node {
            child: Some(child),
            _tmp: None,
            data_dir: dir.to_path_buf(),
            rtmp_port,
            http_port,
            log_path,
            token: String::new(),
            http: Http::new(),
            bin: bin.to_path_buf(),
            extra_logs: Arc::new(Mutex::new(Vec::new())),
        };
        if !node.wait_healthy(Duration::from_secs(30), retry_on_addr_in_use) {
            return None;
        }
        let tok_path = dir.join("admin-token");
        node.token = fs::read_to_string(&tok_path)
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (the node must write its admin token there)",
                    tok_path.display()
                )
            })
            .trim()
            .to_string();
        assert!(!node.token.is_empty(), "admin-token is empty");
        Some(node)
    }

    /// False if the node exited because an address was in use (and the
    /// caller asked to retry); panics on any other failure.
    fn wait_healthy(&mut self, timeout: Duration, retry_on_addr_in_use: bool) -> bool {
        let url = self.url("/healthz");
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = self.log().to_ascii_lowercase();
                if retry_on_addr_in_use && log.contains("in use") {
                    self.child = None;
                    return false;
                }
                panic!(
                    "node exited before /healthz answered ({st}); log:\n{}",
                    tail(&self.log_path, 80)
                );
            }
            if self.http.try_get(&url).is_ok_and(|r| r.status == 200) {
                return true;
            }
            if Instant::now() > end {
                panic!(
                    "GET /healthz did not answer 200 within {timeout:?}; log:\n{}",
                    tail(&self.log_path, 80)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{}", self.rtmp_port, key)
    }

    pub fn master_url(&self, id: &str) -> String {
        self.url(&format!("/hls/{id}/master.m3u8"))
    }

    pub fn media_url(&self, id: &str, rendition: &str) -> String {
        self.url(&format!("/hls/{id}/{rendition}/index.m3u8"))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn attach_log(&self, p: &Path) {
        self.extra_logs.lock().unwrap().push(p.to_path_buf());
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Runs `rungs ARGS... --data-dir DIR` and returns its stdout; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run rungs CLI");
        assert!(
            out.status.success(),
            "rungs {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("CLI stdout is UTF-8")
    }

    /// `rungs channel create --json`: exactly one JSON object on stdout.
    pub fn create_channel(&self, name: &str) -> Channel {
        let out = self.cli(&["channel", "create", "--name", name, "--json"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!("`channel create --json` did not print one JSON object ({e}): {out:?}")
        });
        assert!(
            v.is_object(),
            "channel create --json printed {v}, not an object"
        );
        let ch = Channel::from_json(v);
        assert_eq!(ch.name, name);
        ch
    }

    pub fn metrics(&self) -> Metrics {
        let r = self.http.get(&self.url("/metrics"));
        assert_eq!(r.status, 200, "GET /metrics");
        Metrics::parse(&r.text())
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        signal(c.id(), "-TERM");
        let end = Instant::now() + grace;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > end {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "===== node log ({}), last 150 lines =====\n{}",
                self.log_path.display(),
                tail(&self.log_path, 150)
            );
            for p in self.extra_logs.lock().unwrap().iter() {
                eprintln!(
                    "===== {} (last 30 lines) =====\n{}",
                    p.display(),
                    tail(p, 30)
                );
            }
            if std::env::var_os("RUNGS_E2E_KEEP").is_some()
                && let Some(t) = self._tmp.take()
            {
                eprintln!("keeping {}", t.keep().display());
            }
        }
    }
}

// ---------------------------------------------------------------- ffmpeg

#[derive(Debug, Clone)]
pub struct PubOpts {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub gop: u32,
    pub bframes: bool,
    pub zerolatency: bool,
    pub video_codec: &'static str,
    pub audio_codec: &'static str,
    pub video_bitrate_k: u32,
    /// Stop by itself after this many seconds (a safety net for orphans).
    pub max_seconds: u32,
}

impl Default for PubOpts {
    fn default() -> Self {
        PubOpts {
            width: 640,
            height: 360,
            fps: 30,
            gop: 60,
            bframes: true,
            zerolatency: false,
            video_codec: "libx264",
            audio_codec: "aac",
            video_bitrate_k: 800,
            max_seconds: 300,
        }
    }
}

impl PubOpts {
    pub fn hd() -> Self {
        PubOpts {
            width: 1280,
            height: 720,
            video_bitrate_k: 2500,
            ..Default::default()
        }
    }
}

pub struct Publisher {
    child: Option<Child>,
    pub log_path: PathBuf,
    pub spawned: Instant,
    pub spawned_unix: f64,
    /// When ffmpeg reported its output header written (the first packet is on its way).
    pub output_started: Arc<Mutex<Option<Instant>>>,
    status: Option<ExitStatus>,
}

static PUB_SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Publisher {
    pub fn start(url: &str, o: &PubOpts, log_dir: &Path) -> Publisher {
        let n = PUB_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = log_dir.join(format!("ffmpeg-{}-{n}.log", std::process::id()));
        let mut args: Vec<String> = vec![
            "-hide_banner".into(),
            "-nostdin".into(),
            "-loglevel".into(),
            "info".into(),
        ];
        args.extend(
            [
                "-re",
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size={}x{}:rate={}", o.width, o.height, o.fps),
                "-re",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                &o.max_seconds.to_string(),
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-c:v",
                o.video_codec,
            ]
            .map(String::from),
        );
        if o.video_codec == "libx264" {
            args.extend(
                [
                    "-preset",
                    "veryfast",
                    "-pix_fmt",
                    "yuv420p",
                    "-g",
                    &o.gop.to_string(),
                    "-keyint_min",
                    &o.gop.to_string(),
                    "-sc_threshold",
                    "0",
                    "-bf",
                    if o.bframes { "2" } else { "0" },
                    "-threads",
                    "2",
                ]
                .map(String::from),
            );
            if o.zerolatency {
                args.extend(["-tune", "zerolatency"].map(String::from));
            }
        } else {
            args.extend(["-g", &o.gop.to_string()].map(String::from));
        }
        args.extend(
            [
                "-b:v",
                &format!("{}k", o.video_bitrate_k),
                "-c:a",
                o.audio_codec,
                "-b:a",
                "128k",
                "-ar",
                "48000",
                "-ac",
                "2",
                "-f",
                "flv",
                url,
            ]
            .map(String::from),
        );
        let spawned = Instant::now();
        let spawned_unix = now_unix();
        let mut child = Command::new("ffmpeg")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ffmpeg (is it installed?)");
        let output_started = Arc::new(Mutex::new(None));
        let os = output_started.clone();
        let mut err = child.stderr.take().unwrap();
        let mut log = File::create(&log_path).unwrap();
        writeln!(log, "ffmpeg {}", args.join(" ")).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut line = Vec::new();
            loop {
                let n = match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let _ = log.write_all(&buf[..n]);
                for &c in &buf[..n] {
                    if c == b'\n' || c == b'\r' {
                        if line.starts_with(b"Output #0") {
                            let mut g = os.lock().unwrap();
                            if g.is_none() {
                                *g = Some(Instant::now());
                            }
                        }
                        line.clear();
                    } else {
                        line.push(c);
                    }
                }
            }
        });
        Publisher {
            child: Some(child),
            log_path,
            spawned,
            spawned_unix,
            output_started,
            status: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(c) = self.child.as_mut()
        {
            self.status = c.try_wait().unwrap();
        }
        self.status
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, Duration::from_millis(50), || self.try_status())
    }

    /// SIGKILL: the TCP connection drops without an RTMP unpublish.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            self.status = c.wait().ok();
        }
    }

    /// SIGINT: ffmpeg finishes the stream and unpublishes.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "-INT");
            let end = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(st) = c.try_wait().unwrap() {
                    self.status = Some(st);
                    return;
                }
                if Instant::now() > end {
                    let _ = c.kill();
                    self.status = c.wait().ok();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------- HTTP

#[derive(Debug, Clone)]
pub struct Resp {
    pub url: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub started: Instant,
    pub elapsed: Duration,
    pub done: Instant,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }
    /// `max-age` from Cache-Control, if any.
    pub fn max_age(&self) -> Option<u64> {
        let cc = self.header("cache-control")?;
        cc.split(',').find_map(|d| {
            d.trim()
                .strip_prefix("max-age=")
                .and_then(|v| v.trim().parse().ok())
        })
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} answered non-JSON ({e}): {:?}", self.url, self.text()))
    }
}

#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    pub fn new() -> Http {
        Http::with_timeout(Duration::from_secs(15))
    }

    pub fn with_timeout(t: Duration) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(t))
            .build()
            .into();
        Http { agent }
    }

    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, String> {
        let started = Instant::now();
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = match body {
            Some(data) => self
                .agent
                .run(b.body(data.to_vec()).map_err(|e| e.to_string())?),
            None => self.agent.run(b.body(()).map_err(|e| e.to_string())?),
        }
        .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = res.into_body();
        let body = body
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| format!("{method} {url}: body: {e}"))?;
        let done = Instant::now();
        Ok(Resp {
            url: url.to_string(),
            status,
            headers,
            body,
            started,
            elapsed: done - started,
            done,
        })
    }

    pub fn try_get(&self, url: &str) -> Result<Resp, String> {
        self.request("GET", url, &[], None)
    }

    pub fn get(&self, url: &str) -> Resp {
        self.try_get(url).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn get_h(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", url, headers, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Raw HTTP/1.1 GET returning the status line and headers, for requests that
/// a client library would rewrite.
pub fn raw_get_status(port: u16, path: &str) -> u16 {
    use std::net::TcpStream;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- metrics

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for l in text.lines() {
            if l.starts_with('#') || l.trim().is_empty() {
                continue;
            }
            let (head, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad metrics line {l:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad metric value in {l:?}")),
            };
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), Vec::new()),
                Some((n, rest)) => {
                    let rest = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels in {l:?}"));
                    let mut labels = Vec::new();
                    let mut s = rest;
                    while !s.is_empty() {
                        let (k, r) = s
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad labels in {l:?}"));
                        let mut end = 0;
                        let rb = r.as_bytes();
                        while end < rb.len()
                            && !(rb[end] == b'"' && (end == 0 || rb[end - 1] != b'\\'))
                        {
                            end += 1;
                        }
                        labels.push((k.trim_start_matches(',').to_string(), r[..end].to_string()));
                        s = r.get(end + 1..).unwrap_or("").trim_start_matches(',');
                    }
                    (n.to_string(), labels)
                }
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// Sum over samples of `name` whose labels include all of `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.find(name, want).iter().map(|s| s.value).sum()
    }

    pub fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples
            .iter()
            .any(|s| s.name == name || s.name.starts_with(&format!("{name}_")))
    }

    /// Quantile from a Prometheus histogram (linear within the bucket).
    pub fn histogram_quantile(&self, name: &str, want: &[(&str, &str)], q: f64) -> Option<f64> {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for s in self.find(&format!("{name}_bucket"), want) {
            let le = s.labels.iter().find(|(k, _)| k == "le")?.1.clone();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some(b) => b.1 += s.value,
                None => buckets.push((le, s.value)),
            }
        }
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        let total = buckets.last()?.1;
        if total == 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut prev_le, mut prev_c) = (0.0, 0.0);
        for (le, c) in buckets {
            if c >= rank {
                if le.is_infinite() {
                    return Some(prev_le);
                }
                return Some(
                    prev_le
                        + (le - prev_le)
                            * if c > prev_c {
                                (rank - prev_c) / (c - prev_c)
                            } else {
                                0.0
                            },
                );
            }
            prev_le = le;
            prev_c = c;
        }
        None
    }
}

// ---------------------------------------------------------------- LL-HLS client helpers

/// A fetched and parsed media playlist.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub resp: Resp,
    pub pl: MediaPlaylist,
}

/// GET a media playlist (with an optional query) and parse it strictly; panics
/// on a non-200 or a parse error, showing the text.
pub fn fetch_media(http: &Http, url: &str, query: &str) -> Fetched {
    let full = if query.is_empty() {
        url.to_string()
    } else {
        format!("{url}?{query}")
    };
    let resp = http.get(&full);
    assert_eq!(
        resp.status,
        200,
        "GET {full}: status {} body {:?}",
        resp.status,
        resp.text()
    );
    let text = resp.text();
    let pl = parse_media(&text)
        .unwrap_or_else(|e| panic!("GET {full}: invalid media playlist: {e}\n{text}"));
    Fetched { resp, pl }
}

/// Blocking reload for part `(msn, part)`.
pub fn fetch_blocking(http: &Http, url: &str, msn: u64, part: u64) -> Fetched {
    fetch_media(http, url, &format!("_HLS_msn={msn}&_HLS_part={part}"))
}

/// Waits until `url` answers 200 with a playlist that has at least
/// `min_segments` complete segments.
pub fn wait_playlist(
    http: &Http,
    url: &str,
    min_segments: usize,
    timeout: Duration,
) -> Option<Fetched> {
    wait_for(timeout, Duration::from_millis(200), || {
        let r = http.try_get(url).ok()?;
        if r.status != 200 {
            return None;
        }
        let pl = parse_media(&r.text()).ok()?;
        (pl.segments.len() >= min_segments).then_some(Fetched { resp: r, pl })
    })
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

// ---------------------------------------------------------------- findings

/// Collected rule violations, so that one run reports every broken rule
/// (each once, with a count and the first example) instead of stopping at
/// the first.
#[derive(Default)]
pub struct Findings {
    items: Mutex<std::collections::BTreeMap<String, (usize, String)>>,
    checks: std::sync::atomic::AtomicUsize,
}

impl Findings {
    pub fn check(&self, ok: bool, rule: &str, detail: impl FnOnce() -> String) {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !ok {
            let mut g = self.items.lock().unwrap();
            let e = g.entry(rule.to_string()).or_insert_with(|| (0, detail()));
            e.0 += 1;
        }
    }

    pub fn fail(&self, rule: &str, detail: String) {
        self.check(false, rule, || detail);
    }

    /// The rules that failed.
    pub fn rules(&self) -> Vec<String> {
        self.items.lock().unwrap().keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.items.lock().unwrap().is_empty()
    }

    pub fn report(&self) -> String {
        let g = self.items.lock().unwrap();
        let mut s = String::new();
        for (rule, (n, ex)) in g.iter() {
            s.push_str(&format!("- {rule} ({n}x)\n    first: {ex}\n"));
        }
        s
    }

    pub fn assert_empty(&self, what: &str) {
        let n = self.checks.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("{what}: {n} checks evaluated");
        if !self.is_empty() {
            panic!("{what}: rules violated:\n{}", self.report());
        }
    }
}
