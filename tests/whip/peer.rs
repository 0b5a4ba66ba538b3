//! WHIP publishers as child processes: headless Chromium driven by
//! `tests/whip/publish.mjs`, and aiortc by `tests/whip/aiortc_publish.py`.
//!
//! Both speak the same line protocol on stdout: a JSON object with
//! `"event": "published"` once the POST is answered (and ICE + DTLS are up),
//! then a final JSON object after the DELETE. `stop` on stdin ends them; the
//! child is killed on Drop. Start them from inside the test's network
//! namespace (`Netns::run_in`) so that their candidates are on loopback.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use crate::common::repo_root;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// What the publisher saw of its POST: the `published` line.
#[derive(Debug, Clone)]
pub struct Published {
    pub status: u16,
    /// The `Location` header as the publisher could read it.
    pub location: Option<String>,
    pub posted_unix: f64,
    pub answered_unix: f64,
    /// When the peer connection reached "connected" (ICE + DTLS up).
    pub connected_unix: Option<f64>,
    pub json: serde_json::Value,
}

/// A running WHIP publisher process.
pub struct Peer {
    what: &'static str,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<serde_json::Value>,
    /// The child's stderr (and any stdout line that is not JSON).
    pub log_path: PathBuf,
}

/// The aiortc interpreter: `<repo>/.venv-whip/bin/python`, made by `make deps`.
pub fn venv_python() -> PathBuf {
    let py = repo_root().join(".venv-whip/bin/python");
    assert!(
        py.exists(),
        "{} is missing: the WHIP tests publish with aiortc from that virtual environment; run `make deps`",
        py.display()
    );
    py
}

/// An SDP offer made by aiortc with only these codecs (`"none"` leaves the
/// media out), for POSTs that the node must refuse.
pub fn aiortc_offer(video: &str, audio: &str) -> String {
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/whip/aiortc_publish.py"))
        .args([
            "--offer-only",
            "--video-codec",
            video,
            "--audio-codec",
            audio,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run aiortc_publish.py --offer-only");
    assert!(
        out.status.success(),
        "aiortc_publish.py --offer-only --video-codec {video} --audio-codec {audio} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("SDP is UTF-8")
}

impl Peer {
    /// Chromium's fake camera and microphone, for at most `max_s` seconds.
    pub fn chromium(whip_url: &str, key: &str, max_s: u32, log_dir: &Path) -> Peer {
        let mut cmd = Command::new("node");
        cmd.arg(repo_root().join("tests/whip/publish.mjs"))
            .args([whip_url, key, &max_s.to_string()])
            .current_dir(repo_root());
        Peer::spawn("chromium", cmd, log_dir)
    }

    /// aiortc sending testsrc2 H.264 and a sine in Opus, for at most `max_s`
    /// seconds; `extra` are more arguments of aiortc_publish.py.
    pub fn aiortc(whip_url: &str, key: &str, max_s: u32, log_dir: &Path, extra: &[&str]) -> Peer {
        let mut cmd = Command::new(venv_python());
        cmd.arg(repo_root().join("tests/whip/aiortc_publish.py"))
            .args([
                "--url",
                whip_url,
                "--key",
                key,
                "--seconds",
                &max_s.to_string(),
            ])
            .args(extra)
            .current_dir(repo_root());
        Peer::spawn("aiortc", cmd, log_dir)
    }

    fn spawn(what: &'static str, mut cmd: Command, log_dir: &Path) -> Peer {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let log_path = log_dir.join(format!("whip-{what}-{n}.log"));
        let log = File::create(&log_path).expect("create the publisher log");
        // Its own process group: Drop kills Chromium's children with it.
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().expect("clone the log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the {what} publisher: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) if v.is_object() => {
                        let _ = writeln!(log, "stdout: {}", abbreviate(&line));
                        let _ = tx.send(v);
                    }
                    _ => {
                        let _ = writeln!(log, "stdout: {line}");
                    }
                }
            }
        });
        Peer {
            what,
            child: Some(child),
            stdin,
            lines: rx,
            log_path,
        }
    }

    /// Waits for the `published` line (the final line instead means the
    /// publisher gave up before it: its error is in the panic message).
    pub fn published(&mut self, timeout: Duration) -> Published {
        let v = self.next_line(timeout, "the POST to be answered");
        if v["event"] != "published" {
            panic!(
                "{} publisher ended before publishing: {v}\nlog:\n{}",
                self.what,
                tail(&self.log_path, 30)
            );
        }
        let ms = |k: &str| v[k].as_f64().map(|x| x / 1000.0);
        Published {
            status: v["status"].as_u64().unwrap_or(0) as u16,
            location: v["location"].as_str().map(str::to_string),
            posted_unix: ms("posted_ms").unwrap_or(f64::NAN),
            answered_unix: ms("answered_ms").unwrap_or(f64::NAN),
            connected_unix: ms("connected_ms"),
            json: v,
        }
    }

    /// Says `stop`, then waits for the final line (after its DELETE) and
    /// for the process to exit.
    pub fn stop(&mut self, timeout: Duration) -> serde_json::Value {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"stop\n");
        }
        let v = self.next_line(timeout, "the final report after `stop`");
        // The final line comes after the DELETE and the browser's close:
        // nothing is left to wait for.
        self.kill();
        v
    }

    /// SIGKILL: the publisher vanishes without a DELETE.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn next_line(&mut self, timeout: Duration, what: &str) -> serde_json::Value {
        match self.lines.recv_timeout(timeout) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{} publisher: no report within {timeout:?} while waiting for {what}; log:\n{}",
                self.what,
                tail(&self.log_path, 40)
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "{} publisher exited while waiting for {what}; log:\n{}",
                self.what,
                tail(&self.log_path, 40)
            ),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL to the child's process group (the child and what it started).
fn kill_group(c: &mut Child) {
    let pgid = c.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals that process group only;
    // the group is the child's own (spawned with process_group(0)).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = c.kill();
    let _ = c.wait();
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

/// A JSON line without its SDPs, for the log.
fn abbreviate(line: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    if let Some(o) = v.as_object_mut() {
        for k in ["answer", "offer"] {
            if o.contains_key(k) {
                o.insert(k.into(), "(sdp)".into());
            }
        }
    }
    v.to_string()
}
