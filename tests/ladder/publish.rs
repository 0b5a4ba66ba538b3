//! A cheap live-paced publisher for the ladder tests, and channel creation
//! with a ladder preset.
//!
//! `common::Publisher` encodes with `-preset veryfast`; a 1080p source at
//! that preset would take a whole core of a 2-core machine away from the
//! node under test. This one encodes testsrc2 with `ultrafast` +
//! `zerolatency` (no B-frames) and a fixed GOP, so the node's transcoder is
//! what the machine spends its time on. The ffmpeg child is killed on Drop
//! and stops by itself after `max_seconds`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{Channel, Node, wait_for};

/// What the publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Keyframe interval in frames (`-g`, `-keyint_min`, no scene cuts).
    pub gop: u32,
    pub bitrate_k: u32,
    /// Stop by itself after this many seconds (a safety net for orphans).
    pub max_seconds: u32,
}

impl Source {
    pub fn new(width: u32, height: u32, bitrate_k: u32, max_seconds: u32) -> Source {
        Source {
            width,
            height,
            fps: 30,
            gop: 60,
            bitrate_k,
            max_seconds,
        }
    }
}

pub struct CheapPublisher {
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl CheapPublisher {
    pub fn start(url: &str, s: Source, log_dir: &Path, tag: &str) -> CheapPublisher {
        let log_path = log_dir.join(format!("ffmpeg-ladder-{tag}-{}x{}.log", s.width, s.height));
        let gop = s.gop.to_string();
        let rate = format!("{}k", s.bitrate_k);
        let args: Vec<String> = [
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "info",
            "-re",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={}x{}:rate={}", s.width, s.height, s.fps),
            "-re",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &s.max_seconds.to_string(),
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
            "-g",
            &gop,
            "-keyint_min",
            &gop,
            "-sc_threshold",
            "0",
            "-b:v",
            &rate,
            "-maxrate",
            &rate,
            "-bufsize",
            &rate,
            "-threads",
            "2",
            "-c:a",
            "aac",
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
        .map(String::from)
        .to_vec();
        let log = File::create(&log_path).expect("create publisher log");
        let child = Command::new("ffmpeg")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ffmpeg (is it installed?)");
        CheapPublisher {
            child: Some(child),
            log_path,
        }
    }

    /// Whether ffmpeg is still publishing.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGINT so ffmpeg unpublishes cleanly, SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let exited = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            c.try_wait().ok().flatten()
        });
        if exited.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for CheapPublisher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `rungs channel create --ladder LADDER --json`.
pub fn create_channel(node: &Node, name: &str, ladder: &str) -> Channel {
    let out = node.cli(&[
        "channel", "create", "--name", name, "--ladder", ladder, "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!(
            "`channel create --ladder {ladder} --json` did not print one JSON object ({e}): {out:?}"
        )
    });
    assert_eq!(
        v["ladder"].as_str(),
        Some(ladder),
        "channel create --ladder {ladder} answered {v}"
    );
    Channel::from_json(v)
}

/// Starts a publisher for `ch` and attaches its log to the node's.
pub fn publish(node: &Node, ch: &Channel, s: Source) -> CheapPublisher {
    let p = CheapPublisher::start(&node.rtmp_url(&ch.stream_key), s, &node.data_dir, &ch.id);
    node.attach_log(&p.log_path);
    p
}
