//! Authorization hooks against a small HTTP backend the test runs: the
//! publish hook refuses one channel and lets another publish (RTMP with
//! ffmpeg, and the WHIP endpoint), the play hook refuses its playlist, the
//! backend sees no stream key, a backend that never answers is handled by
//! the configured policy within the hook's deadline, and a channel's own
//! hook replaces the node's.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A WHIP offer body: the hook is asked before the offer is read, so any
/// text tells a refusal by the hook (403) from one by the offer check (400).
const NOT_AN_OFFER: &[u8] = b"v=0\r\n";

/// The operator's backend: denies (403) any question that names a channel
/// in `deny` (filled once the channels exist), allows (204) the rest; with `silent`, it never answers. Keeps
/// every request body it was sent.
struct Backend {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    fn start(deny: Arc<Mutex<Vec<String>>>, silent: bool) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}/hook", l.local_addr().expect("bound"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let deny = deny.clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let body = read_request(&mut s);
                    seen.lock().unwrap().push(body.clone());
                    if silent {
                        std::thread::sleep(Duration::from_secs(30));
                        return;
                    }
                    let refused = deny
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|c| body.contains(&format!("\"{c}\"")));
                    let status = if refused {
                        "403 Forbidden"
                    } else {
                        "204 No Content"
                    };
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                });
            }
        });
        Backend { url, bodies }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 request with a Content-Length body; returns the body.
fn read_request(s: &mut std::net::TcpStream) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            }
        }
    }
    String::new()
}

fn node_with_hooks(hooks_toml: String) -> Node {
    Node::start(NodeConfig {
        extra_toml: Box::leak(hooks_toml.into_boxed_str()),
        ..NodeConfig::default()
    })
}

fn whip_post(node: &Node, ch: &Channel) -> (u16, Duration) {
    let auth = format!("Bearer {}", ch.stream_key);
    let started = Instant::now();
    let r = node
        .http
        .request(
            "POST",
            &node.whip_url(&ch.id),
            &[
                ("content-type", "application/sdp"),
                ("authorization", &auth),
            ],
            Some(NOT_AN_OFFER),
        )
        .expect("the WHIP endpoint answers");
    (r.status, started.elapsed())
}

#[test]
fn publish_hook_refuses_one_channel_and_lets_another_publish() {
    let _turn = take_turn();
    let f = Findings::default();
    let denied = Arc::new(Mutex::new(Vec::<String>::new()));
    let backend = Backend::start(denied.clone(), false);
    let node = node_with_hooks(format!(
        "[hooks]\npublish_url = \"{0}\"\nplay_url = \"{0}\"\ntimeout_ms = 2000\ncache_s = 0\n",
        backend.url
    ));
    let refused = node.create_channel("hook-refused");
    let allowed = node.create_channel("hook-allowed");
    denied.lock().unwrap().push(refused.id.clone());

    let (ok, _p) = node.publish_accepted(&refused.id, &refused.stream_key, &node.data_dir);
    f.check(
        !ok,
        "RTMP publish refused when the hook answers 403",
        || node.log(),
    );
    let (ok, mut p) = node.publish_accepted(&allowed.id, &allowed.stream_key, &node.data_dir);
    f.check(
        ok,
        "RTMP publish goes live when the hook answers 204",
        || format!("{}\n{}", p.log(), node.log()),
    );
    p.stop();

    let (status, _) = whip_post(&node, &refused);
    f.check(status == 403, "WHIP POST refused 403 by the hook", || {
        format!("status {status}")
    });
    let (status, _) = whip_post(&node, &allowed);
    f.check(
        status == 400,
        "WHIP POST past the hook (then refused as a bad offer, 400)",
        || format!("status {status}"),
    );

    let r = node.http.get(&node.master_url(&refused.id));
    f.check(
        r.status == 403 && r.header("x-rungs-refusal") == Some("hook"),
        "the play hook refuses the multivariant playlist (403, X-Rungs-Refusal: hook)",
        || format!("{} {:?}", r.status, r.header("x-rungs-refusal")),
    );
    let r = node.http.get(&node.master_url(&allowed.id));
    f.check(
        r.status != 403,
        "the play hook lets another channel be played",
        || format!("{}", r.status),
    );

    let bodies = backend.bodies();
    f.check(
        bodies
            .iter()
            .any(|b| b.contains(r#""event":"play""#) && b.contains(&refused.id)),
        "the backend was asked about the playback",
        || format!("{bodies:?}"),
    );
    let rtmp = bodies
        .iter()
        .find(|b| b.contains("\"rtmp\"") && b.contains(&refused.id));
    f.check(
        rtmp.is_some(),
        "the backend was asked about the RTMP publish",
        || format!("{bodies:?}"),
    );
    if let Some(b) = rtmp {
        let v: serde_json::Value = serde_json::from_str(b).unwrap_or_default();
        f.check(
            v["event"] == "publish"
                && v["channel"] == refused.id.as_str()
                && v["client"] == "127.0.0.1"
                && v["key_id"].as_str().is_some_and(|k| k.len() == 16),
            "the question names event, channel, protocol, client and a key id",
            || b.clone(),
        );
    }
    f.check(
        bodies
            .iter()
            .all(|b| !b.contains(&refused.stream_key) && !b.contains(&allowed.stream_key)),
        "no stream key is ever sent to the backend",
        || format!("{bodies:?}"),
    );
    let m = node.metrics();
    f.check(
        m.sum("rungs_ingest_rejected_total", &[("reason", "hook_denied")]) >= 2.0,
        "refusals by the hook are counted (reason hook_denied)",
        || format!("{:?}", m.find("rungs_ingest_rejected_total", &[])),
    );
    f.check(
        m.sum(
            "rungs_hook_calls_total",
            &[("hook", "publish"), ("result", "deny")],
        ) >= 2.0,
        "rungs_hook_calls_total counts the denials",
        || format!("{:?}", m.find("rungs_hook_calls_total", &[])),
    );
    f.assert_empty("publish_hook_refuses_one_channel_and_lets_another_publish");
}

#[test]
fn a_hook_that_never_answers_follows_the_policy_within_its_deadline() {
    let f = Findings::default();
    let backend = Backend::start(Arc::default(), true);
    for (policy, want) in [("deny", 403), ("allow", 400)] {
        let node = node_with_hooks(format!(
            "[hooks]\npublish_url = \"{}\"\ntimeout_ms = 500\non_timeout = \"{policy}\"\n",
            backend.url
        ));
        let ch = node.create_channel("hook-silent");
        let (status, took) = whip_post(&node, &ch);
        f.check(
            status == want,
            "a silent backend's answer is hooks.on_timeout",
            || format!("on_timeout {policy}: status {status}"),
        );
        f.check(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "the node waits for the hook's deadline (500 ms), not longer",
            || format!("on_timeout {policy}: answered after {took:?}"),
        );
        let m = node.metrics();
        f.check(
            m.sum(
                "rungs_hook_calls_total",
                &[("hook", "publish"), ("result", "timeout")],
            ) >= 1.0,
            "timeouts are counted",
            || format!("{:?}", m.find("rungs_hook_calls_total", &[])),
        );
        if policy == "deny" {
            // A channel with a publish hook of its own is asked there, not
            // at the node's silent backend.
            let own = Backend::start(Arc::default(), false);
            let ch = node.create_channel("hook-own");
            node.cli(&["channel", "update", &ch.id, "--publish-hook", &own.url]);
            // Hooks are re-read from the registry every second.
            let deadline = Instant::now() + Duration::from_secs(8);
            let mut status = whip_post(&node, &ch).0;
            while status != 400 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                status = whip_post(&node, &ch).0;
            }
            f.check(
                status == 400 && own.bodies().iter().any(|b| b.contains(&ch.id)),
                "a channel's own publish hook replaces the node's (past the hook: 400 bad offer)",
                || format!("status {status}, own backend saw {:?}", own.bodies()),
            );
        }
    }
    f.check(
        !backend.bodies().is_empty(),
        "the backend was asked",
        || "no request reached it".into(),
    );
    f.assert_empty("a_hook_that_never_answers_follows_the_policy_within_its_deadline");
}

#[test]
fn a_bad_hook_url_stops_the_node_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[hooks]\npublish_url = \"ftp://backend/\"\n").expect("write config");
    let out = std::process::Command::new(node_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run rungs serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "rungs serve started with a bad hook URL"
    );
    assert!(err.contains("hooks.publish_url"), "{err}");
}
