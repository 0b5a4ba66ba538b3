//! Live-paced ffmpeg publishers: testsrc2 video and a sine tone pushed over
//! RTMP, with the log kept in a file. The ffmpeg child is killed on Drop and
//! stops by itself after `max_seconds`, so it can never outlive the test.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{now_unix, signal, wait_for};

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
    /// x264 preset (`ultrafast` leaves the cores to the node under test).
    pub preset: &'static str,
    /// CBR-ish: maxrate and bufsize equal to the bitrate.
    pub vbv: bool,
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
            preset: "veryfast",
            vbv: false,
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
                    o.preset,
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
        let rate = format!("{}k", o.video_bitrate_k);
        if o.vbv {
            args.extend(["-maxrate", &rate, "-bufsize", &rate].map(String::from));
        }
        args.extend(
            [
                "-b:v",
                &rate,
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

    /// Whether ffmpeg is still publishing.
    pub fn running(&mut self) -> bool {
        self.child.is_some() && self.try_status().is_none()
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
