//! WHIP ingest (RFC 9725) end to end: real WebRTC publishers into a node,
//! and what players then get.
//!
//! - `browser_whip_publish_plays`: headless Chromium publishes its fake
//!   camera and microphone to a `standard` ladder channel from a page on
//!   another origin (CORS); the stream is packaged like an RTMP one (every
//!   playlist passes the LL-HLS rules of `tests/llhls/rules.rs`, init +
//!   segment decode as H.264 and AAC), hls.js plays it, and DELETE ends it.
//!   Prints POST->first part and publisher->part latency.
//! - `browser_whip_hlsjs_plays_60s_while_resolution_ramps`: hls.js plays a
//!   Chromium publish for 60 s from its first seconds, while the browser's
//!   encoder steps its resolution up: no stall, no seek over a hole, and the
//!   timeline probe finds every rendition whole and aligned.
//! - `browser_whip_golive_page_publishes`: the node's own go-live page
//!   (`/publish/<id>`) in Chromium: a wrong key is refused on the page, the
//!   right one goes live, the channel gets playlists with audio, Stop ends it.
//! - `whip_netns_aiortc_publish`: the same with aiortc, a second WebRTC
//!   stack, into a passthrough channel (fewer checks).
//! - `whip_netns_rotate_key_cuts_the_publisher`: rotating the channel's key
//!   ends a live aiortc session within a second; the old key gets 401.
//! - `whip_netns_bad_input`: what the WHIP endpoint refuses (400, 401, 404,
//!   405, 409), a junk datagram flood on the UDP port while a session is
//!   live, and a publisher that vanishes without DELETE.
//! - `whip_netns_guard_runs_node_on_loopback_only`: the namespace harness
//!   itself (the node answers inside it; only `lo` there; the host's ports
//!   out of reach).
//!
//! Every test runs the node and its peers in a fresh loopback-only network
//! namespace (`common::Netns`), so ICE candidates stay on 127.0.0.1 and no
//! packet leaves loopback: they need root and iproute2, plus aiortc in
//! `.venv-whip` and, for the browser, Chromium and `npm install` (all from
//! `make deps`). They fail, never skip, when something is missing.
//!
//! Helpers: `tests/whip/peer.rs` (the publisher processes),
//! `tests/whip/checks.rs` (playlists, ffprobe, latency).

#[path = "whip/checks.rs"]
mod checks;
mod common;
#[path = "llhls/history.rs"]
mod history;
#[path = "whip/peer.rs"]
mod peer;
#[path = "llhls/rules.rs"]
mod rules;

use checks::*;
use common::*;
use peer::{Peer, Published, aiortc_offer};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

/// Reconnect grace of the WHIP tests' nodes: a stream ends this long after
/// its session does (RTMP or WHIP alike), so ENDLIST comes soon.
const GRACE_S: f64 = 2.0;

fn whip_node(session_timeout_s: f64) -> Node {
    Node::start(NodeConfig {
        session_timeout_s,
        reconnect_grace_s: GRACE_S,
        ..Default::default()
    })
}

/// `rungs channel create --ladder LADDER --json`; the JSON names the
/// channel's WHIP endpoint.
fn create_channel(f: &Findings, node: &Node, name: &str, ladder: &str) -> Channel {
    let out = node.cli(&[
        "channel", "create", "--name", name, "--ladder", ladder, "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("`channel create --json` printed no JSON object ({e}): {out}"));
    let ch = Channel::from_json(v);
    let whip = ch.json["ingest"]["whip"].as_str().unwrap_or("");
    f.check(
        whip.starts_with("http") && whip.ends_with(&format!("/whip/{}", ch.id)),
        "channel create --json: ingest.whip is http://HOST:PORT/whip/ID",
        || format!("{}", ch.json),
    );
    ch
}

/// POST to the channel's WHIP endpoint with an optional bearer key.
fn post_offer(http: &Http, node: &Node, id: &str, key: Option<&str>, sdp: &str) -> Resp {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut h = vec![("Content-Type", "application/sdp")];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    http.request("POST", &node.whip_url(id), &h, Some(sdp.as_bytes()))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The 201 and its Location, as the publisher saw them.
fn check_created(f: &Findings, p: &Published, id: &str, who: &str) -> String {
    assert_eq!(
        p.status, 201,
        "{who}: POST answered {}: {}",
        p.status, p.json["body"]
    );
    let ct = p.json["content_type"].as_str().unwrap_or("");
    f.check(
        ct.starts_with("application/sdp"),
        "201 answer has Content-Type application/sdp",
        || format!("{who}: {ct:?}"),
    );
    let loc = p.location.clone().unwrap_or_default();
    f.check(
        loc.contains(&format!("/whip/{id}/")),
        "201 has Location /whip/<channel>/<session>, readable by the publisher",
        || format!("{who}: Location {:?} (a browser reads it only when listed in Access-Control-Expose-Headers)", p.location),
    );
    f.check(
        p.connected_unix.is_some(),
        "publisher's peer connection reaches connected",
        || format!("{who}: {}", p.json["states"]),
    );
    loc
}

/// The session URL from a Location that may be relative.
fn session_url(node: &Node, loc: &str) -> String {
    resolve(&node.url("/whip/"), loc)
}

fn whip_metric(node: &Node, name: &str, labels: &[(&str, &str)]) -> f64 {
    node.metrics().sum(name, labels)
}

/// The latency figures of one run, printed for the log.
fn report_latency(
    who: &str,
    node: &Node,
    id: &str,
    p: &Published,
    first: &FirstPart,
    lat: &Latency,
) {
    let post_ms = |t: Option<f64>| t.map_or(f64::NAN, |t| (t - p.posted_unix) * 1000.0);
    let m = node.metrics();
    let c = [("channel", id), ("rendition", "source")];
    let hq = |q| {
        m.histogram_quantile("rungs_ingest_to_part_seconds", &c, q)
            .map_or("n/a".into(), |v| format!("{v:.3}s"))
    };
    eprintln!(
        "{who}: POST->201 {:.0} ms, POST->connected {:.0} ms, POST->first part listed {:.3} s",
        post_ms(Some(p.answered_unix)),
        post_ms(p.connected_unix),
        first.seen_unix - p.posted_unix
    );
    eprintln!(
        "{who}: publisher->part fetchable (first sample sent -> hinted GET done): p50 {:.3} s p90 {:.3} s over {} parts ({} decode-time gaps); hint wait p50 {:.3} s; node ingest->part p50 {} p90 {}",
        quantile(&lat.first_sample, 0.5),
        quantile(&lat.first_sample, 0.9),
        lat.first_sample.len(),
        lat.gaps.len(),
        quantile(&lat.hint_wait, 0.5),
        hq(0.5),
        hq(0.9)
    );
    for g in &lat.gaps {
        eprintln!(
            "{who}: part {} starts {:+} ticks from the previous part's end{}{}",
            g.uri,
            g.ticks,
            if g.new_map { ", new EXT-X-MAP" } else { "" },
            if g.discontinuity {
                ", after EXT-X-DISCONTINUITY"
            } else {
                ""
            },
        );
    }
}

/// The harness itself: a node started from inside the namespace answers
/// /healthz there, the namespace has only `lo` (so only 127.0.0.1 to
/// announce), and a port listening in the host namespace is out of reach.
#[test]
fn whip_netns_guard_runs_node_on_loopback_only() {
    let _turn = take_turn();
    let ns = Netns::new("whip_netns_guard_runs_node_on_loopback_only");
    let host = std::net::TcpListener::bind("127.0.0.1:0").expect("bind in the host namespace");
    let host_port = host.local_addr().expect("bound").port();
    let addrs = ns.run_in(|| {
        let node = Node::start(NodeConfig::default());
        let r = node.http.get(&node.url("/healthz"));
        assert_eq!(r.status, 200, "/healthz inside the namespace");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", host_port)).is_err(),
            "a port of the host namespace is reachable: the thread is not in the namespace"
        );
        let out = Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .expect("run ip addr");
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    assert_eq!(
        ns.links(),
        vec!["lo".to_string()],
        "the namespace has only loopback"
    );
    let v4: Vec<&str> = addrs
        .split_whitespace()
        .filter(|w| w.contains('/') && w.contains('.'))
        .collect();
    assert_eq!(
        v4,
        vec!["127.0.0.1/8"],
        "IPv4 addresses seen from inside: {addrs}"
    );
}

#[test]
fn browser_whip_publish_plays() {
    let _turn = take_turn();
    require_browser();
    let ns = Netns::new("browser_whip_publish_plays");
    ns.run_in(|| {
        let f = Findings::default();
        let node = whip_node(10.0);
        let http = Http::new();
        let ch = create_channel(&f, &node, "whip-browser", "standard");
        let src = node.media_url(&ch.id, "source");
        let aud = node.media_url(&ch.id, "audio");

        let mut peer = Peer::chromium(&node.whip_url(&ch.id), &ch.stream_key, 120, &node.data_dir);
        node.attach_log(&peer.log_path);
        let first = wait_first_part(&http, &src, Duration::from_secs(40)).unwrap_or_else(|| {
            panic!(
                "{src} listed no part within 40 s; publisher log:\n{}",
                peer::tail(&peer.log_path, 30)
            )
        });
        let p = peer.published(Duration::from_secs(20));
        let loc = check_created(&f, &p, &ch.id, "chromium");
        let t0 = p.connected_unix.unwrap_or(p.answered_unix);
        f.check(
            first.seen_unix - p.posted_unix < 5.0,
            "first part listed < 5 s after the POST",
            || format!("{:.3} s", first.seen_unix - p.posted_unix),
        );

        // The master playlist: source, ladder rungs, AAC audio.
        wait_playlist(&http, &aud, 2, Duration::from_secs(30))
            .expect("audio playlist never had 2 segments");
        wait_playlist(&http, &src, 2, Duration::from_secs(30))
            .expect("source playlist never had 2 segments");
        let mut urls = check_master(&f, &http, &node.master_url(&ch.id), &src, &aud);
        f.check(
            urls.len() >= 2,
            "a standard channel lists the source and at least one rung",
            || format!("{urls:?}"),
        );
        for u in &urls {
            wait_playlist(&http, u, 1, Duration::from_secs(20))
                .unwrap_or_else(|| panic!("{u} never had a complete segment"));
        }
        urls.push(aud.clone());

        // Follow the live edge (rules on every reload), latency; then every playlist once.
        let lat = follow_parts(&f, &http, &src, 10.0, t0, &first);
        report_latency("whip chromium", &node, &ch.id, &p, &first, &lat);
        f.check(
            quantile(&lat.first_sample, 0.5) < 1.5,
            "publisher->part latency p50 < 1.5 s",
            || format!("{:?}", lat.first_sample),
        );
        check_playlists(&f, &http, &urls);
        let (w, h, n) = probe_video(&f, &http, &src, &node.data_dir);
        let (chans, na) = probe_audio(&f, &http, &aud, &node.data_dir);
        eprintln!("ffprobe: source segment {w}x{h}, {n} frames; audio {chans} ch, {na} AAC frames");
        let pubs = whip_metric(&node, "rungs_publishers", &[("ingest", "whip")]);
        f.check(
            pubs == 1.0,
            "rungs_publishers{ingest=\"whip\"} == 1 while live",
            || format!("{pubs}"),
        );
        let bytes = whip_metric(
            &node,
            "rungs_ingest_bytes_total",
            &[("channel", &ch.id), ("ingest", "whip")],
        );
        f.check(
            bytes > 0.0,
            "rungs_ingest_bytes_total{ingest=\"whip\"} counts",
            || format!("{bytes}"),
        );

        // hls.js plays it in a second browser.
        play_with_hlsjs(&f, &node, &ch.id, 12);

        // The publisher's DELETE ends the stream; the session is gone after.
        let end = peer.stop(Duration::from_secs(30));
        f.check(
            end["ok"] == true,
            "Chromium publisher ran and DELETEd cleanly",
            || format!("{}", end),
        );
        let stats = end["stats"]
            .as_array()
            .and_then(|s| s.last())
            .cloned()
            .unwrap_or_default();
        eprintln!("chromium sender at the end: {}", stats["video"]);
        f.check(
            stats["video"]["codec"]
                .as_str()
                .is_some_and(|c| c.contains("H264")),
            "Chromium sends H.264 (the answer chose it)",
            || format!("{}", stats["video"]),
        );
        f.check(
            end["delete"]["status"] == 200,
            "DELETE of the session -> 200",
            || format!("{}", end["delete"]),
        );
        match wait_endlist(&http, &urls, Duration::from_secs_f64(GRACE_S + 5.0)) {
            Ok(d) => eprintln!("DELETE -> EXT-X-ENDLIST on every playlist after {d:?}"),
            Err(last) => f.fail(
                "DELETE ends the stream: EXT-X-ENDLIST within grace + 5 s",
                last,
            ),
        }
        let again = http
            .request("DELETE", &session_url(&node, &loc), &[], None)
            .unwrap_or_else(|e| panic!("{e}"));
        f.check(
            again.status == 404,
            "DELETE of an ended session -> 404",
            || format!("{} {}", again.status, again.text()),
        );
        let pubs = whip_metric(&node, "rungs_publishers", &[("ingest", "whip")]);
        f.check(
            pubs == 0.0,
            "rungs_publishers{ingest=\"whip\"} back to 0",
            || format!("{pubs}"),
        );
        f.assert_empty("browser_whip_publish_plays");
    });
    assert_eq!(
        ns.links(),
        vec!["lo".to_string()],
        "the namespace has only loopback"
    );
}

#[test]
fn browser_whip_golive_page_publishes() {
    let _turn = take_turn();
    require_browser();
    let ns = Netns::new("browser_whip_golive_page_publishes");
    ns.run_in(|| {
        let f = Findings::default();
        let node = whip_node(10.0);
        let http = Http::new();
        let ch = create_channel(&f, &node, "whip-golive", "passthrough");
        let page = node.url(&format!("/publish/{}", ch.id));
        let script = repo_root().join("tests/whip/golive.mjs");
        let key = ch.stream_key.clone();
        let driver = std::thread::spawn(move || {
            Command::new("node")
                .arg(script)
                .args([page.as_str(), key.as_str(), "12"])
                .current_dir(repo_root())
                .output()
                .expect("run node tests/whip/golive.mjs")
        });
        let aud = node.media_url(&ch.id, "audio");
        let src = node.media_url(&ch.id, "source");
        let live = wait_playlist(&http, &src, 2, Duration::from_secs(40)).is_some()
            && wait_playlist(&http, &aud, 2, Duration::from_secs(10)).is_some();
        f.check(
            live,
            "the go-live page's stream has source and audio segments",
            || node.log(),
        );
        let out = driver.join().expect("driver thread");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| {
                panic!(
                    "golive.mjs printed no report: {stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        eprintln!("go-live page: {report}");
        f.check(
            report["ok"] == true,
            "the page published and stopped",
            || report.to_string(),
        );
        f.check(
            report["refused_status"] == 401
                && report["refused_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("401")),
            "a wrong key is refused (401) and the page says so",
            || report.to_string(),
        );
        f.check(
            report["live_ms"].as_f64().is_some_and(|ms| ms < 5000.0),
            "Go live -> connected within 5 s",
            || report.to_string(),
        );
        f.check(
            report["state_after_stop"] == "stopped",
            "Stop ends the publish",
            || report.to_string(),
        );
        match wait_endlist(&http, &[src, aud], Duration::from_secs_f64(GRACE_S + 5.0)) {
            Ok(_) => {}
            Err(last) => f.fail("Stop ends the stream: EXT-X-ENDLIST", last),
        }
        f.assert_empty("go-live page");
    });
}

/// tests/player/play.mjs on the channel's master playlist for `secs`.
fn play_with_hlsjs(f: &Findings, node: &Node, id: &str, secs: u32) -> Playback {
    let v = play_hlsjs(&node.master_url(id), secs, None, 0);
    f.check(v["ok"] == true, "hls.js plays the WHIP stream", || {
        format!(
            "{}: {}; console {}",
            v["error"], v["report"]["errors"], v["console"]
        )
    });
    check_playback(f, &v["report"], secs)
}

/// hls.js starts on a Chromium WHIP publish as soon as the multivariant
/// playlist answers, while the browser's encoder still ramps its resolution
/// up (320x180 to 960x540 as its bandwidth estimate grows), and plays it for
/// 60 s: no stall, no seek over a hole, sub-second latency; the timeline
/// probe finds every rendition whole and aligned across the resolution
/// changes.
#[test]
fn browser_whip_hlsjs_plays_60s_while_resolution_ramps() {
    let _turn = take_turn();
    require_browser();
    let ns = Netns::new("browser_whip_hlsjs_plays_60s");
    ns.run_in(|| {
        let f = Findings::default();
        let node = whip_node(10.0);
        let http = Http::new();
        let ch = create_channel(&f, &node, "whip-ramp", "standard");
        let probe = TimelineProbe::start(&node.master_url(&ch.id));
        let mut peer = Peer::chromium(&node.whip_url(&ch.id), &ch.stream_key, 120, &node.data_dir);
        node.attach_log(&peer.log_path);
        let src = node.media_url(&ch.id, "source");
        wait_playlist(&http, &src, 1, Duration::from_secs(40)).unwrap_or_else(|| {
            panic!(
                "{src} had no complete segment within 40 s; publisher log:\n{}",
                peer::tail(&peer.log_path, 30)
            )
        });
        let published = peer.published(Duration::from_secs(20));
        f.check(published.status == 201, "POST -> 201", || {
            format!("{}", published.json)
        });
        let p = play_with_hlsjs(&f, &node, &ch.id, 60);
        let timeline = probe.finish();
        eprintln!("timeline:\n{}", timeline.summary());
        timeline.check(&f, "timeline");
        f.check(
            p.latency_p50 < 1.0,
            "hls.js latency p50 < 1 s on a WHIP stream",
            || format!("{p:?}"),
        );
        let sizes = timeline.rendition("source").map_or(0, |r| r.sizes.len());
        f.check(
            sizes >= 2,
            "the source changed resolution while hls.js played (the case under test)",
            || timeline.summary(),
        );
        let end = peer.stop(Duration::from_secs(30));
        f.check(
            end["ok"] == true,
            "Chromium publisher ran and DELETEd cleanly",
            || format!("{end}"),
        );
        f.assert_empty("browser_whip_hlsjs_plays_60s_while_resolution_ramps");
    });
}

/// aiortc publishing 90 s to `ch`, once the source rendition lists a part.
fn aiortc_live(node: &Node, http: &Http, ch: &Channel) -> (Peer, FirstPart) {
    let src = node.media_url(&ch.id, "source");
    let peer = Peer::aiortc(
        &node.whip_url(&ch.id),
        &ch.stream_key,
        90,
        &node.data_dir,
        &[],
    );
    node.attach_log(&peer.log_path);
    let first = wait_first_part(http, &src, Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "{src} listed no part within 30 s; aiortc log:\n{}",
            peer::tail(&peer.log_path, 30)
        )
    });
    (peer, first)
}

#[test]
fn whip_netns_aiortc_publish() {
    let _turn = take_turn();
    let ns = Netns::new("whip_netns_aiortc_publish");
    ns.run_in(|| {
        let f = Findings::default();
        let node = whip_node(10.0);
        let http = Http::new();
        let ch = create_channel(&f, &node, "whip-aiortc", "passthrough");
        let src = node.media_url(&ch.id, "source");
        let aud = node.media_url(&ch.id, "audio");

        let (mut peer, first) = aiortc_live(&node, &http, &ch);
        let p = peer.published(Duration::from_secs(20));
        check_created(&f, &p, &ch.id, "aiortc");
        let t0 = p.connected_unix.unwrap_or(p.answered_unix);

        wait_playlist(&http, &src, 2, Duration::from_secs(30))
            .expect("source playlist never had 2 segments");
        wait_playlist(&http, &aud, 2, Duration::from_secs(20))
            .expect("audio playlist never had 2 segments");
        let mut urls = check_master(&f, &http, &node.master_url(&ch.id), &src, &aud);
        urls.push(aud.clone());
        let lat = follow_parts(&f, &http, &src, 6.0, t0, &first);
        report_latency("whip aiortc", &node, &ch.id, &p, &first, &lat);
        check_playlists(&f, &http, &urls);
        let (w, h, n) = probe_video(&f, &http, &src, &node.data_dir);
        f.check(
            (w, h) == (640, 360),
            "source is the publisher's 640x360",
            || format!("{w}x{h}"),
        );
        let (chans, na) = probe_audio(&f, &http, &aud, &node.data_dir);
        eprintln!("ffprobe: source segment {w}x{h}, {n} frames; audio {chans} ch, {na} AAC frames");

        let end = peer.stop(Duration::from_secs(20));
        f.check(
            end["ok"] == true && end["delete_status"] == 200,
            "aiortc ran and its DELETE -> 200",
            || format!("{end}"),
        );
        match wait_endlist(&http, &urls, Duration::from_secs_f64(GRACE_S + 5.0)) {
            Ok(d) => eprintln!("DELETE -> EXT-X-ENDLIST after {d:?}"),
            Err(last) => f.fail(
                "DELETE ends the stream: EXT-X-ENDLIST within grace + 5 s",
                last,
            ),
        }
        f.assert_empty("whip_netns_aiortc_publish");
    });
}

#[test]
fn whip_netns_rotate_key_cuts_the_publisher() {
    let _turn = take_turn();
    let ns = Netns::new("whip_netns_rotate_key_cuts_the_publisher");
    ns.run_in(|| {
        let f = Findings::default();
        let node = whip_node(10.0);
        let http = Http::new();
        let ch = create_channel(&f, &node, "whip-rotated", "passthrough");
        let (mut peer, _) = aiortc_live(&node, &http, &ch);
        let publishing = || whip_metric(&node, "rungs_publishers", &[("ingest", "whip")]);
        assert_eq!(publishing(), 1.0);

        node.rotate_key(&ch.id);
        let ended = time_until(Duration::from_secs(5), || {
            publishing() == 0.0
                && whip_metric(
                    &node,
                    "rungs_whip_sessions_ended_total",
                    &[("reason", "channel_gone")],
                ) == 1.0
        });
        f.check_within(
            "rotate-key ends the WHIP session",
            ended,
            Duration::from_secs(1),
            || node.log(),
        );
        f.check(
            whip_metric(
                &node,
                "rungs_ingest_cut_total",
                &[("ingest", "whip"), ("reason", "key_rotated")],
            ) == 1.0,
            "rungs_ingest_cut_total{ingest=\"whip\",reason=\"key_rotated\"} counts it",
            || node.log(),
        );
        // The old key is refused at the door.
        let offer = aiortc_offer("H264", "opus");
        let again = post_offer(&http, &node, &ch.id, Some(&ch.stream_key), &offer);
        f.check(again.status == 401, "the old key gets 401", || {
            format!("{} {}", again.status, again.text())
        });
        peer.kill();
        f.assert_empty("whip_netns_rotate_key_cuts_the_publisher");
    });
}

#[test]
fn whip_netns_bad_input() {
    let _turn = take_turn();
    let ns = Netns::new("whip_netns_bad_input");
    ns.run_in(|| {
        let f = Findings::default();
        let timeout_s = 3.0;
        let mut node = whip_node(timeout_s);
        let http = Http::new();
        let a = create_channel(&f, &node, "whip-bad-a", "passthrough");
        let b = create_channel(&f, &node, "whip-bad-b", "passthrough");
        let good = aiortc_offer("H264", "opus");
        let rejected0 = whip_metric(&node, "rungs_ingest_rejected_total", &[("ingest", "whip")]);

        // ---- refused before any media: nothing goes live
        let expect = |r: &Resp, status: u16, rule: &str| {
            f.check(r.status == status, rule, || format!("{} {:?}", r.status, r.text()));
        };
        let key = Some(a.stream_key.as_str());
        expect(&post_offer(&http, &node, &a.id, key, "this is not SDP\r\n"), 400, "malformed SDP -> 400");
        let r = post_offer(&http, &node, &a.id, key, &aiortc_offer("VP8", "opus"));
        expect(&r, 400, "offer without H.264 (VP8 only) -> 400");
        let body = r.text().to_ascii_lowercase();
        f.check(body.contains("h.264") || body.contains("h264"), "the 400 for VP8 names H.264", || r.text());
        let r = post_offer(&http, &node, &a.id, key, &aiortc_offer("none", "opus"));
        expect(&r, 400, "offer without video -> 400");
        let r = post_offer(&http, &node, &a.id, key, &aiortc_offer("H264", "PCMU"));
        expect(&r, 400, "audio without Opus (PCMU) -> 400");
        f.check(r.text().to_ascii_lowercase().contains("opus"), "the 400 for PCMU names Opus", || r.text());
        expect(&post_offer(&http, &node, &a.id, Some("wrong-key-0123456789"), &good), 401, "wrong key -> 401");
        expect(&post_offer(&http, &node, &a.id, Some(&b.stream_key), &good), 401, "another channel's key -> 401");
        expect(&post_offer(&http, &node, &a.id, None, &good), 401, "no Authorization -> 401");
        let gone = node.url(&format!("/whip/{}/no-such-session", a.id));
        let r = http.request("DELETE", &gone, &[], None).unwrap_or_else(|e| panic!("{e}"));
        expect(&r, 404, "DELETE of an unknown session -> 404");
        check_preflight(&f, &http, &node.whip_url(&a.id));
        let r = http.get(&node.master_url(&a.id));
        expect(&r, 404, "refused offers do not make the channel live");
        let m = node.metrics();
        let rejected = m.sum("rungs_ingest_rejected_total", &[("ingest", "whip")]) - rejected0;
        f.check(rejected >= 7.0, "rungs_ingest_rejected_total{ingest=\"whip\"} counts the 7 refusals", || {
            format!("+{rejected}: {:?}", m.find("rungs_ingest_rejected_total", &[("ingest", "whip")]))
        });
        eprintln!(
            "whip rejections by reason: {:?}",
            m.find("rungs_ingest_rejected_total", &[("ingest", "whip")])
                .iter()
                .map(|s| (s.labels.clone(), s.value))
                .collect::<Vec<_>>()
        );

        // ---- live over RTMP: WHIP is refused with 409
        let opts = PubOpts {
            preset: "ultrafast",
            zerolatency: true,
            bframes: false,
            max_seconds: 60,
            ..Default::default()
        };
        let mut rtmp = Publisher::start(&node.rtmp_url(&a.stream_key), &opts, &node.data_dir);
        node.attach_log(&rtmp.log_path);
        wait_playlist(&http, &node.media_url(&a.id, "source"), 1, Duration::from_secs(25))
            .unwrap_or_else(|| panic!("RTMP never went live; ffmpeg:\n{}", rtmp.log()));
        expect(&post_offer(&http, &node, &a.id, key, &good), 409, "WHIP to a channel live over RTMP -> 409");
        f.check(rtmp.running(), "the RTMP publisher is undisturbed by the refused WHIP", || rtmp.log());
        rtmp.kill();

        // ---- live over WHIP (aiortc on b)
        let mut peer = Peer::aiortc(&node.whip_url(&b.id), &b.stream_key, 120, &node.data_dir, &[]);
        node.attach_log(&peer.log_path);
        let p = peer.published(Duration::from_secs(20));
        let loc = check_created(&f, &p, &b.id, "aiortc");
        let src = node.media_url(&b.id, "source");
        let aud = node.media_url(&b.id, "audio");
        wait_playlist(&http, &src, 1, Duration::from_secs(25)).expect("WHIP channel never had a segment");
        let kb = Some(b.stream_key.as_str());
        expect(&post_offer(&http, &node, &b.id, kb, &good), 409, "second WHIP publisher -> 409");
        let r = http
            .request("PATCH", &session_url(&node, &loc), &[("Content-Type", "application/trickle-ice-sdpfrag")], Some(b"a=end-of-candidates\r\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        expect(&r, 405, "PATCH (trickle ICE) on the session -> 405");
        let mut second = Publisher::start(&node.rtmp_url(&b.stream_key), &opts, &node.data_dir);
        f.check(
            second.wait_exit(Duration::from_secs(15)).is_some(),
            "RTMP publisher to a channel live over WHIP is refused",
            || second.log(),
        );

        // ---- junk datagrams on the shared UDP port: the session and the stream go on
        let parts = |n: &Node| whip_metric(n, "rungs_parts_published_total", &[("channel", &b.id), ("rendition", "source")]);
        let seed = (now_unix() * 1000.0) as u64;
        let t = Instant::now();
        let sent = flood(node.whip_udp_port, 20_000, seed);
        eprintln!("flood: {sent} junk datagrams in {:?} (seed {seed})", t.elapsed());
        std::thread::sleep(Duration::from_millis(500));
        let (p0, e0) = (parts(&node), edge(&http, &src));
        std::thread::sleep(Duration::from_secs(3));
        let (p1, e1) = (parts(&node), edge(&http, &src));
        f.check(node.is_running(), "node survives the junk flood", || node.log());
        f.check(
            p1 - p0 >= 8.0,
            "source keeps producing parts after the flood (>= 8 in 3 s)",
            || format!("{p0} -> {p1}; edge {e0:?} -> {e1:?}"),
        );
        f.check(peer.is_running(), "the publisher is still connected after the flood", || {
            peer::tail(&peer.log_path, 20)
        });
        let pl = fetch_media(&http, &src, "").pl;
        f.check(!pl.endlist, "the stream did not end under the flood", || "ENDLIST".into());

        // ---- the publisher vanishes without DELETE: the session times out
        peer.kill();
        let killed = Instant::now();
        let urls = [src.clone(), aud.clone()];
        let limit = timeout_s + GRACE_S + 4.0;
        match wait_endlist(&http, &urls, Duration::from_secs_f64(limit)) {
            Ok(_) => eprintln!(
                "publisher killed -> EXT-X-ENDLIST after {:?} (session_timeout_s {timeout_s}, grace {GRACE_S})",
                killed.elapsed()
            ),
            Err(last) => f.fail(
                "a vanished publisher's stream ends: ENDLIST within session timeout + grace + 4 s",
                last,
            ),
        }
        let pubs = whip_metric(&node, "rungs_publishers", &[("ingest", "whip")]);
        f.check(pubs == 0.0, "rungs_publishers{ingest=\"whip\"} 0 after the timeout", || format!("{pubs}"));
        f.check(node.is_running(), "node still running at the end", || node.log());
        f.check(!node.log().contains(&b.stream_key), "node log never contains a stream key", || {
            "stream key in log".into()
        });
        f.assert_empty("whip_netns_bad_input");
    });
}

/// A browser's CORS preflight for the WHIP POST.
fn check_preflight(f: &Findings, http: &Http, url: &str) {
    let r = http
        .request(
            "OPTIONS",
            url,
            &[
                ("Origin", "http://127.0.0.1:1"),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization,content-type",
                ),
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let h = |k: &str| r.header(k).unwrap_or("").to_ascii_lowercase();
    f.check(
        (200..300).contains(&r.status) && !h("access-control-allow-origin").is_empty(),
        "OPTIONS preflight -> 2xx with Access-Control-Allow-Origin",
        || format!("{} {:?}", r.status, r.headers),
    );
    let methods = h("access-control-allow-methods");
    f.check(
        methods.contains("post") || methods == "*",
        "preflight allows POST",
        || format!("{:?}", r.headers),
    );
    let allowed = h("access-control-allow-headers");
    f.check(
        (allowed.contains("authorization") && allowed.contains("content-type")) || allowed == "*",
        "preflight allows Authorization and Content-Type",
        || format!("{:?}", r.headers),
    );
}

/// Sends `n` junk datagrams of 1..=1500 bytes to 127.0.0.1:`port` from four
/// sockets: a quarter each random, STUN-like (magic cookie, random
/// attributes with lying lengths), DTLS-like (record header, first byte
/// 20..=63) and RTP/RTCP-like (version 2, any payload type), the three
/// kinds a WebRTC port demultiplexes (RFC 7983). Returns how many went out.
fn flood(port: u16, n: usize, seed: u64) -> usize {
    let mut rng = seed | 1;
    let mut next = move || {
        // xorshift64: reproducible from the printed seed.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let socks: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a flood socket"))
        .collect();
    let mut sent = 0;
    let mut buf = vec![0u8; 1500];
    for i in 0..n {
        let len = 1 + (next() % 1500) as usize;
        for b in buf[..len].iter_mut() {
            *b = next() as u8;
        }
        let d = &mut buf[..len];
        match i % 4 {
            1 if len >= 20 => {
                // STUN: binding request/indication/response, cookie, then TLVs.
                d[0] = 0;
                d[1] = [0x01, 0x11, 0x01][(next() % 3) as usize];
                let body = (len - 20) as u16;
                d[2..4].copy_from_slice(&body.to_be_bytes());
                d[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
                let mut at = 20;
                while at + 4 <= len {
                    let ty = [0x0006u16, 0x0008, 0x8028, 0x0024, 0x8029, 0x802A, 0x0025]
                        [(next() % 7) as usize];
                    let alen = (next() % 64) as u16;
                    d[at..at + 2].copy_from_slice(&ty.to_be_bytes());
                    d[at + 2..at + 4].copy_from_slice(&alen.to_be_bytes());
                    at += 4 + alen as usize;
                }
            }
            2 if len >= 13 => {
                // DTLS record: content type, DTLS 1.2 version, epoch, seq, length.
                d[0] = 20 + (next() % 44) as u8;
                d[1] = 0xfe;
                d[2] = 0xfd;
                let rl = (next() % 2048) as u16;
                d[11..13].copy_from_slice(&rl.to_be_bytes());
            }
            3 if len >= 12 => {
                // RTP/RTCP: version 2, random payload type (RTCP is 192..=223).
                d[0] = 0x80 | (d[0] & 0x3f);
            }
            _ => {}
        }
        if socks[i % 4].send_to(d, ("127.0.0.1", port)).is_ok() {
            sent += 1;
        }
    }
    sent
}
