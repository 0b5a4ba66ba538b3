//! The node under test: started on free ports in its own data directory,
//! driven through its CLI, stopped by signal. Its log (and those of the
//! processes attached to it) is printed when a test panics; the child is
//! always killed on Drop, never left running.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::Http;
use super::metrics::Metrics;
use super::{free_port, node_bin, signal, tail};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub part_target_s: f64,
    pub segment_target_s: f64,
    pub reconnect_grace_s: f64,
    pub max_connections: usize,
    /// `[whip] session_timeout_s`: a WHIP session whose packets stop ends.
    pub session_timeout_s: f64,
    /// `[http]`: the HTTP limits (the node's defaults unless a test sets them).
    pub http: HttpLimits,
    /// More TOML tables, appended to the generated config (e.g.
    /// `[ingest.limits]`).
    pub extra_toml: &'static str,
    /// `public_url`, with `{http_port}` replaced by the port the node gets.
    /// Default: `http://127.0.0.1:{http_port}`.
    pub public_url: String,
    /// `[tls]` cert and key files: the player port serves HTTPS only, so
    /// the harness waits for the node on the admin port's /healthz.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// `[http]` of the node under test.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub header_timeout_s: f64,
    pub idle_timeout_s: f64,
    pub max_connections: usize,
    pub max_blocked_requests: usize,
    pub admin_on_player_port: bool,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout_s: 10.0,
            idle_timeout_s: 60.0,
            max_connections: 16_384,
            max_blocked_requests: 10_000,
            admin_on_player_port: false,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            part_target_s: 0.2,
            segment_target_s: 2.0,
            reconnect_grace_s: 10.0,
            max_connections: 1024,
            session_timeout_s: 10.0,
            public_url: "http://127.0.0.1:{http_port}".into(),
            http: HttpLimits::default(),
            extra_toml: "",
            tls: None,
        }
    }
}

pub struct Node {
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    pub rtmp_port: u16,
    pub http_port: u16,
    /// The admin listener: `/metrics` and `/api/v1`.
    pub admin_port: u16,
    /// The WHIP UDP port (ICE-lite, all sessions), on 127.0.0.1: every test
    /// node gets its own, never the default 0.0.0.0:8189 that two nodes
    /// (or a node outside the tests) would fight over.
    pub whip_udp_port: u16,
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
        let admin_port = free_port();
        let whip_udp_port = free_udp_port();
        let cfg_path = dir.join("e2e-config.toml");
        let h = &cfg.http;
        let toml = format!(
            "public_url = {:?}\n\n[hls]\npart_target_s = {}\nsegment_target_s = {}\n\n[ingest]\nreconnect_grace_s = {}\nmax_connections = {}\n\n[whip]\nudp_addr = \"127.0.0.1:{whip_udp_port}\"\nsession_timeout_s = {:?}\n\n[http]\nheader_timeout_s = {:?}\nidle_timeout_s = {:?}\nmax_connections = {}\nmax_blocked_requests = {}\nadmin_on_player_port = {}\n",
            cfg.public_url
                .replace("{http_port}", &http_port.to_string()),
            cfg.part_target_s,
            cfg.segment_target_s,
            cfg.reconnect_grace_s,
            cfg.max_connections,
            cfg.session_timeout_s,
            h.header_timeout_s,
            h.idle_timeout_s,
            h.max_connections,
            h.max_blocked_requests,
            h.admin_on_player_port,
        );
        let tls = match &cfg.tls {
            Some((cert, key)) => format!("\n[tls]\ncert = {cert:?}\nkey = {key:?}\n"),
            None => String::new(),
        };
        fs::write(&cfg_path, toml + &tls + "\n" + cfg.extra_toml).unwrap();
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
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
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
            admin_port,
            whip_udp_port,
            log_path,
            token: String::new(),
            http: Http::new(),
            bin: bin.to_path_buf(),
            extra_logs: Arc::new(Mutex::new(Vec::new())),
        };
        let health = match cfg.tls {
            Some(_) => node.admin_url("/healthz"),
            None => node.url("/healthz"),
        };
        if !node.wait_healthy(&health, Duration::from_secs(30), retry_on_addr_in_use) {
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
    fn wait_healthy(&mut self, url: &str, timeout: Duration, retry_on_addr_in_use: bool) -> bool {
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
            if self.http.try_get(url).is_ok_and(|r| r.status == 200) {
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

    /// A URL on the admin listener (`/metrics`, `/api/v1/...`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{}", self.rtmp_port, key)
    }

    /// The WHIP endpoint of channel `id` (`POST` an SDP offer there).
    pub fn whip_url(&self, id: &str) -> String {
        self.url(&format!("/whip/{id}"))
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

    /// The node's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `limit` for the node to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            let c = self.child.as_mut()?;
            if let Some(st) = c.try_wait().ok().flatten() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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
    /// Creates a `passthrough` channel: these tests are about the source
    /// path (LL-HLS rules, ingest, channels); tests/ladder.rs creates
    /// transcoded ones.
    pub fn create_channel(&self, name: &str) -> Channel {
        self.create_channel_with_ladder(name, "passthrough")
    }

    /// `rungs channel create --ladder LADDER --json`.
    pub fn create_channel_with_ladder(&self, name: &str, ladder: &str) -> Channel {
        let out = self.cli(&[
            "channel", "create", "--name", name, "--ladder", ladder, "--json",
        ]);
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

    /// `POST /api/v1/channels/ID/rotate-key`: the channel with its new key.
    pub fn rotate_key(&self, id: &str) -> Channel {
        let auth = format!("Bearer {}", self.token);
        let r = self
            .http
            .request(
                "POST",
                &self.admin_url(&format!("/api/v1/channels/{id}/rotate-key")),
                &[("Authorization", &auth)],
                None,
            )
            .expect("rotate-key");
        assert_eq!(r.status, 200, "rotate-key: {}", r.text());
        Channel::from_json(r.json())
    }

    /// Publishes with `key` and returns whether the node accepted it (the
    /// channel's playlist appeared / ffmpeg kept running) or refused it
    /// (ffmpeg exited nonzero).
    pub fn publish_accepted(&self, ch_id: &str, key: &str, dir: &Path) -> (bool, super::Publisher) {
        let mut p = super::Publisher::start(&self.rtmp_url(key), &super::PubOpts::default(), dir);
        self.attach_log(&p.log_path);
        if let Some(st) = p.wait_exit(Duration::from_secs(6)) {
            assert!(!st.success(), "ffmpeg exited 0 within 6 s:\n{}", p.log());
            return (false, p);
        }
        // Still running: it must be live.
        let ok = super::wait_playlist(
            &self.http,
            &self.media_url(ch_id, "source"),
            1,
            Duration::from_secs(20),
        )
        .is_some();
        (ok && p.try_status().is_none(), p)
    }

    /// ffmpeg (the default test pattern) publishing to `ch` until its
    /// source rendition lists `segments` complete segments.
    pub fn publish_live(&self, ch: &Channel, segments: usize) -> super::Publisher {
        let publisher = super::Publisher::start(
            &self.rtmp_url(&ch.stream_key),
            &super::PubOpts::default(),
            &self.data_dir,
        );
        self.attach_log(&publisher.log_path);
        super::wait_playlist(
            &self.http,
            &self.media_url(&ch.id, "source"),
            segments,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no playlist; ffmpeg:\n{}", publisher.log()));
        publisher
    }

    /// An admin API call with the node's token (and a JSON body, if any).
    pub fn api(&self, method: &str, path: &str, body: Option<&[u8]>) -> super::Resp {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("Authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.http
            .request(method, &self.admin_url(path), &headers, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn metrics(&self) -> Metrics {
        let r = self.http.get(&self.admin_url("/metrics"));
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

/// A UDP port free on 127.0.0.1 now (like `free_port` for TCP).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind an ephemeral UDP port")
        .local_addr()
        .expect("local address of a bound socket")
        .port()
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
