//! Stream health and stream sessions end to end, with ffmpeg publishing
//! over RTMP: `GET /api/v1/channels/{id}/stream` says `healthy` for a live
//! publish (with the ingest as sent, the rungs and a viewer), `starving`
//! for a publisher held below real time, and `GET .../sessions` (and
//! `rungs channel sessions`) shows a reconnect within the grace period and
//! why the stream ended.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn api(node: &Node, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {}", node.token);
    let r = node
        .http
        .request(
            "GET",
            &node.admin_url(path),
            &[("authorization", &auth)],
            None,
        )
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn stream(node: &Node, id: &str) -> Value {
    let (status, v) = api(node, &format!("/api/v1/channels/{id}/stream"));
    assert_eq!(status, 200, "GET stream: {v}");
    v
}

/// Polls the stream view until `cond` holds; the last view either way.
fn stream_until(node: &Node, id: &str, limit: Duration, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_for(limit, Duration::from_millis(250), || {
        last = stream(node, id);
        cond(&last).then_some(())
    });
    last
}

/// `ffmpeg ARGS`, killed on drop.
struct Ffmpeg(Child);

impl Ffmpeg {
    fn spawn(args: &[&str], log: &Path) -> Ffmpeg {
        let log = std::fs::File::create(log).expect("ffmpeg log");
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "warning"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ffmpeg (is it installed?)");
        Ffmpeg(child)
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_live_publish_is_healthy_with_its_ingest_rungs_and_viewers() {
    let _turn = take_turn();
    let node = Node::start(NodeConfig::default());
    let ch = node.create_channel_with_ladder("health", "standard");

    let (status, v) = api(&node, &format!("/api/v1/channels/{}/stream", ch.id));
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["health"].as_str()),
        (Some("offline"), Some("unknown")),
        "before any publish: {v}"
    );
    assert!(v["last_session"].is_null(), "no session yet: {v}");
    let (status, _) = api(&node, "/api/v1/channels/no-such-channel/stream");
    assert_eq!(status, 404, "an unknown channel");
    let r = node
        .http
        .get(&node.admin_url(&format!("/api/v1/channels/{}/stream", ch.id)));
    assert_eq!(r.status, 401, "no admin token");

    let mut publisher = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts::default(),
        &node.data_dir,
    );
    node.attach_log(&publisher.log_path);
    let http = Http::new();
    wait_playlist(
        &http,
        &node.media_url(&ch.id, "source"),
        1,
        Duration::from_secs(20),
    )
    .unwrap_or_else(|| panic!("no playlist; ffmpeg:\n{}", publisher.log()));
    // A player: one address reading the multivariant and a media playlist.
    assert_eq!(http.get(&node.master_url(&ch.id)).status, 200);
    assert_eq!(http.get(&node.media_url(&ch.id, "source")).status, 200);

    let v = stream_until(&node, &ch.id, Duration::from_secs(15), |v| {
        v["health"] == "healthy"
            && v["rungs"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["encoder"] == "libx264"))
    });
    assert_eq!(v["state"], "live", "{v}");
    assert_eq!(v["health"], "healthy", "{v}");
    assert!(v["started_at"].as_str().is_some(), "{v}");
    let ing = &v["ingest"];
    assert_eq!(ing["protocol"], "rtmp", "{v}");
    assert_eq!(ing["video"]["codec"], "h264", "{v}");
    assert_eq!(
        (
            ing["video"]["width"].as_u64(),
            ing["video"]["height"].as_u64()
        ),
        (Some(640), Some(360)),
        "{v}"
    );
    let fps = ing["video"]["frame_rate"].as_f64().unwrap_or(0.0);
    assert!((fps - 30.0).abs() < 1.5, "30 fps sent, {fps} measured: {v}");
    assert_eq!(ing["audio"]["codec"], "aac", "{v}");
    assert_eq!(ing["audio"]["sample_rate"], 48_000, "{v}");
    assert_eq!(ing["audio"]["channels"], 2, "{v}");
    let kbps = ing["bitrate_bps"].as_u64().unwrap_or(0) / 1000;
    assert!(
        (300..3000).contains(&kbps),
        "800k video + 128k audio sent, {kbps} kb/s measured: {v}"
    );
    let speed = ing["speed"].as_f64().unwrap_or(0.0);
    assert!(speed >= 0.9, "a live-paced publisher: {v}");

    let rungs = v["rungs"].as_array().cloned().unwrap_or_default();
    assert_eq!(rungs[0]["name"], "source", "{v}");
    assert_eq!(rungs[0]["encoder"], "passthrough", "{v}");
    // A 360p source: the standard ladder's rungs below it.
    let r160 = rungs
        .iter()
        .find(|r| r["name"] == "160p")
        .unwrap_or_else(|| panic!("160p: {v}"));
    assert_eq!(r160["encoder"], "libx264", "{v}");
    assert!(r160["backend"] == "cpu" || r160["backend"] == "cuda", "{v}");
    assert!(r160["dropped_gops"].is_u64(), "{v}");
    assert!(
        v["viewers"].as_u64().unwrap_or(0) >= 1,
        "the player above: {v}"
    );
    assert_eq!(v["last_session"]["protocol"], "rtmp", "{v}");
    assert!(
        v["last_session"]["ended_at"].is_null(),
        "the current session: {v}"
    );

    // The CLI asks the running node the same question.
    let admin = format!("127.0.0.1:{}", node.admin_port);
    let out = node.cli(&[
        "channel",
        "stream",
        &ch.id,
        "--json",
        "--admin-addr",
        &admin,
    ]);
    let cli: Value = serde_json::from_str(out.trim()).unwrap_or_default();
    assert_eq!(
        (
            cli["state"].as_str(),
            cli["ingest"]["video"]["width"].as_u64()
        ),
        (Some("live"), Some(640)),
        "{out}"
    );
    let text = node.cli(&["channel", "stream", &ch.id, "--admin-addr", &admin]);
    assert!(
        text.contains(&format!("channel {}: live", ch.id)) && text.contains("640x360"),
        "{text}"
    );
    publisher.stop();
}

#[test]
fn a_publisher_below_real_time_is_starving() {
    let _turn = take_turn();
    let node = Node::start(NodeConfig::default());
    let ch = node.create_channel("slow");
    // A clip made as fast as the CPU goes, then sent at half speed: its
    // media time advances half a second per second of wall time.
    let clip = node.data_dir.join("clip.flv");
    let made = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("testsrc2=size=320x180:rate=30")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", "-y"])
        .arg(&clip)
        .status()
        .expect("run ffmpeg");
    assert!(made.success(), "making the clip");
    let clip_arg = clip.to_string_lossy().into_owned();
    let log = node.data_dir.join("ffmpeg-slow.log");
    node.attach_log(&log);
    let url = node.rtmp_url(&ch.stream_key);
    let _slow = Ffmpeg::spawn(
        &[
            "-readrate",
            "0.5",
            "-i",
            &clip_arg,
            "-c",
            "copy",
            "-f",
            "flv",
            &url,
        ],
        &log,
    );

    let v = stream_until(&node, &ch.id, Duration::from_secs(20), |v| {
        v["health"] == "starving"
    });
    assert_eq!(v["state"], "live", "{v}");
    assert_eq!(v["health"], "starving", "half real time: {v}");
    // Starving for its pace, not for silence: media keeps arriving.
    let speed = v["ingest"]["speed"].as_f64().unwrap_or(1.0);
    assert!((0.3..0.8).contains(&speed), "sent at 0.5x: {v}");
    assert!(
        v["ingest"]["last_media_age_s"].as_f64().unwrap_or(9.0) < 1.5,
        "{v}"
    );
}

#[test]
fn sessions_show_a_reconnect_and_why_the_stream_ended() {
    let _turn = take_turn();
    let node = Node::start(NodeConfig {
        reconnect_grace_s: 4.0,
        ..NodeConfig::default()
    });
    let ch = node.create_channel("sessions");
    let http = Http::new();
    let sessions = || {
        let (status, v) = api(&node, &format!("/api/v1/channels/{}/sessions", ch.id));
        assert_eq!(status, 200, "GET sessions: {v}");
        v
    };
    let kinds = |v: &Value| -> Vec<String> {
        v["sessions"][0]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["kind"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(sessions()["sessions"], Value::Array(Vec::new()));
    let (status, _) = api(&node, "/api/v1/channels/no-such-channel/sessions");
    assert_eq!(status, 404, "an unknown channel");

    let publish = || {
        let p = Publisher::start(
            &node.rtmp_url(&ch.stream_key),
            &PubOpts {
                width: 320,
                height: 180,
                ..PubOpts::default()
            },
            &node.data_dir,
        );
        node.attach_log(&p.log_path);
        p
    };
    let mut first = publish();
    wait_playlist(
        &http,
        &node.media_url(&ch.id, "source"),
        1,
        Duration::from_secs(20),
    )
    .unwrap_or_else(|| panic!("no playlist; ffmpeg:\n{}", first.log()));
    first.stop();
    let mut second = publish();
    let back = wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        kinds(&sessions())
            .iter()
            .any(|k| k == "publisher reconnected")
            .then_some(())
    });
    assert!(back.is_some(), "a reconnect within grace: {}", sessions());
    let live = stream_until(&node, &ch.id, Duration::from_secs(10), |v| {
        v["health"] == "healthy"
    });
    assert_eq!(
        live["state"], "live",
        "the second publisher streams: {live}"
    );
    second.stop();

    // Grace runs out: the stream ends, and says why.
    let ended = wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        let v = sessions();
        v["sessions"][0]["end_reason"].is_string().then_some(v)
    })
    .unwrap_or_else(|| panic!("the session never ended: {}", sessions()));
    let list = ended["sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "a reconnect continues the session: {ended}");
    let s = &list[0];
    assert_eq!(s["protocol"], "rtmp", "{ended}");
    assert_eq!(
        s["end_reason"], "publisher did not come back (disconnected)",
        "{ended}"
    );
    assert_eq!(
        kinds(&ended),
        ["publisher left", "publisher reconnected", "publisher left"],
        "{ended}"
    );
    assert_eq!(s["ingest"]["video"]["width"], 320, "{ended}");
    assert!(
        s["ingest"]["video"]["frame_rate"].as_f64().is_some(),
        "{ended}"
    );
    assert!(
        s["ended_at"].as_str() >= s["started_at"].as_str(),
        "{ended}"
    );

    let v = stream(&node, &ch.id);
    assert_eq!(
        (v["state"].as_str(), v["health"].as_str()),
        (Some("offline"), Some("unknown")),
        "{v}"
    );
    assert_eq!(v["last_session"]["id"], s["id"], "{v}");
    assert_eq!(v["last_session"]["end_reason"], s["end_reason"], "{v}");

    // The CLI reads the registry: the same sessions, as JSON or text.
    let out = node.cli(&["channel", "sessions", &ch.id, "--json"]);
    let cli: Value = serde_json::from_str(out.trim()).unwrap_or_default();
    assert_eq!(cli, ended, "the CLI prints what the API returns");
    let text = node.cli(&["channel", "sessions", &ch.id]);
    assert!(
        text.contains("publisher reconnected: rtmp")
            && text.contains("publisher did not come back (disconnected)"),
        "{text}"
    );
}
