//! A fleet of real nodes on one PostgreSQL registry: a channel made on one
//! node is published to another, played from either (the first redirects to
//! the holder, hls.js follows), refused a second publisher anywhere, and
//! leaves the live map when its node dies; a node set to proxy answers with
//! the holder's playlist; a drained node refuses new publishers, plays its
//! stream to the end and exits 0; `public_url` with a path prefix names and
//! serves every URL.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A node of the fleet on `db_url`, answering for channels live elsewhere
/// with `forward` (`redirect` or `proxy`). Short leases keep the test short;
/// the heartbeat stays at a third of it.
fn fleet_node(dir: &Path, id: &str, db_url: &str, forward: &str, extra: &str) -> Node {
    let toml = format!(
        "[registry]\nurl = \"{db_url}\"\n\n[node]\nid = \"{id}\"\nregion = \"test-{id}\"\n\n\
         [fleet]\nlease_s = 3.0\nheartbeat_s = 1.0\nforward = \"{forward}\"\n\n{extra}"
    );
    let cfg = NodeConfig {
        // A publisher that stops ends its stream soon after.
        reconnect_grace_s: 1.0,
        extra_toml: Box::leak(toml.into_boxed_str()),
        ..NodeConfig::default()
    };
    Node::start_in(&dir.join(id), cfg, &node_bin())
}

/// A passthrough channel made through the node's API (the CLI would open
/// the data dir's SQLite rather than the fleet's registry).
fn create(node: &Node, name: &str) -> Channel {
    let body = format!(r#"{{"name":"{name}","ladder":"passthrough"}}"#);
    let r = node.api("POST", "/api/v1/channels", Some(body.as_bytes()));
    assert_eq!(r.status, 201, "create {name}: {}", r.text());
    Channel::from_json(r.json())
}

/// Polls until `cond` holds; panics with `what` after `limit`.
fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(limit, Duration::from_millis(200), || cond().then_some(()))
        .unwrap_or_else(|| panic!("{what} within {limit:?}"));
}

/// An HTTP client that shows redirects instead of following them.
fn no_redirects() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into()
}

fn status_and_location(agent: &ureq::Agent, url: &str) -> (u16, Option<String>) {
    let r = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (r.status().as_u16(), location)
}

fn nodes(node: &Node) -> Vec<serde_json::Value> {
    let r = node.api("GET", "/api/v1/nodes", None);
    assert_eq!(r.status, 200, "GET /api/v1/nodes: {}", r.text());
    r.json().as_array().cloned().unwrap_or_default()
}

fn node_ids(node: &Node) -> Vec<String> {
    let mut ids: Vec<String> = nodes(node)
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[test]
fn two_nodes_share_the_registry_any_node_plays_any_channel_and_a_dead_node_leaves_the_map() {
    require_browser();
    let _turn = take_turn();
    let pg = PgServer::start();
    let db = pg.create_database("fleet");
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = fleet_node(tmp.path(), "a", &db, "redirect", "");
    let b = fleet_node(tmp.path(), "b", &db, "redirect", "");
    assert_eq!(node_ids(&a), ["a", "b"], "both nodes in the live map");

    // Made through A's API, known to B at once.
    let ch = create(&a, "fleet");
    let on_b = b.api("GET", &format!("/api/v1/channels/{}", ch.id), None);
    assert_eq!(
        on_b.status,
        200,
        "B knows the channel made on A: {}",
        on_b.text()
    );

    let mut publisher = b.publish_live(&ch, 2);

    // A sends players to B; B answers itself.
    let agent = no_redirects();
    let (status, location) = status_and_location(&agent, &a.master_url(&ch.id));
    assert_eq!(
        status, 307,
        "A redirects a player asking for a channel live on B"
    );
    assert_eq!(location.as_deref(), Some(b.master_url(&ch.id).as_str()));
    let media = format!("{}?_HLS_msn=1", a.media_url(&ch.id, "source"));
    let (status, location) = status_and_location(&agent, &media);
    assert_eq!(status, 307, "media playlists too, query kept");
    assert_eq!(
        location,
        Some(format!("{}?_HLS_msn=1", b.media_url(&ch.id, "source")))
    );
    let (status, _) = status_and_location(&agent, &b.master_url(&ch.id));
    assert_eq!(status, 200, "B serves the channel it holds");
    let (status, _) = status_and_location(&agent, &a.master_url("0123456789abcdef"));
    assert_eq!(status, 404, "a channel live nowhere is A's own 404");

    // hls.js given A's URL plays from B.
    let via_a = play_hlsjs(&a.master_url(&ch.id), 8, None, 0);
    let f = Findings::default();
    f.check(via_a["ok"] == true, "hls.js plays through A", || {
        format!("{}: console {}", via_a["error"], via_a["console"])
    });
    check_playback(&f, &via_a["report"], 8);
    let level_urls: Vec<String> = via_a["report"]["levels"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|x| x["url"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    f.check(
        !level_urls.is_empty() && level_urls.iter().all(|u| u.starts_with(&b.url("/"))),
        "hls.js followed the redirect to B",
        || format!("{level_urls:?}"),
    );
    let direct = play_hlsjs(&b.master_url(&ch.id), 8, None, 0);
    check_playback(&f, &direct["report"], 8);
    println!(
        "first frame: through A (redirect) {:.0} ms, B directly {:.0} ms",
        via_a["report"]["firstFrameMs"].as_f64().unwrap_or(f64::NAN),
        direct["report"]["firstFrameMs"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
    f.assert_empty("hls.js given node A's URL, and given B's");

    // A second publisher is refused on the other node as on one node.
    let (accepted, _refused) = a.publish_accepted(&ch.id, &ch.stream_key, &a.data_dir);
    assert!(!accepted, "a second publisher on A for a channel live on B");
    assert!(
        a.metrics()
            .sum("rungs_ingest_rejected_total", &[("reason", "already_live")])
            >= 1.0,
        "A counts the refusal as already_live"
    );

    // B dies: within its lease it leaves the map, and the channel with it.
    let killed = Instant::now();
    if let Some(pid) = b.pid() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    publisher.kill();
    until(Duration::from_secs(10), "B leaves the live map", || {
        node_ids(&a) == ["a"]
    });
    let gone_after = killed.elapsed();
    assert!(
        gone_after < Duration::from_secs_f64(3.0 + 2.5),
        "B left the map {gone_after:?} after it died (lease 3 s)"
    );
    let (status, _) = status_and_location(&agent, &a.master_url(&ch.id));
    assert_eq!(status, 404, "A no longer sends players to a dead node");
    // Its channel can be published again, here.
    let (accepted, _p) = a.publish_accepted(&ch.id, &ch.stream_key, &a.data_dir);
    assert!(
        accepted,
        "the channel of a dead node is free once its lease ran out"
    );

    // The registry going away makes A unhealthy within a lease; back, healthy.
    pg.stop();
    until(
        Duration::from_secs(10),
        "A unhealthy without its registry",
        || a.http.get(&a.url("/healthz")).status == 503,
    );
    assert_eq!(a.http.get(&a.url("/readyz")).status, 503, "and not ready");
    pg.start_again();
    until(Duration::from_secs(15), "A healthy again", || {
        a.http.get(&a.url("/healthz")).status == 200
    });
}

#[test]
fn a_drained_node_refuses_publishers_plays_its_stream_to_the_end_and_exits_0() {
    let _turn = take_turn();
    let pg = PgServer::start();
    let db = pg.create_database("drain");
    let tmp = tempfile::tempdir().expect("tempdir");
    // A proxies (rather than redirects) players asking for B's channels.
    let a = fleet_node(
        tmp.path(),
        "a",
        &db,
        "proxy",
        "[drain]\ndeadline_s = 60.0\n",
    );
    let mut b = fleet_node(
        tmp.path(),
        "b",
        &db,
        "redirect",
        "[drain]\ndeadline_s = 60.0\n",
    );
    let ch = create(&b, "draining");
    let other = create(&a, "newcomer");
    // A publisher that stops by itself 12 s after it started.
    let mut publisher = Publisher::start(
        &b.rtmp_url(&ch.stream_key),
        &PubOpts {
            max_seconds: 12,
            ..PubOpts::default()
        },
        &b.data_dir,
    );
    b.attach_log(&publisher.log_path);
    wait_playlist(
        &b.http,
        &b.media_url(&ch.id, "source"),
        1,
        Duration::from_secs(20),
    )
    .unwrap_or_else(|| panic!("no playlist; ffmpeg:\n{}", publisher.log()));
    assert_eq!(
        b.http.get(&b.url("/readyz")).status,
        200,
        "ready before the drain"
    );

    let pid = b.pid().expect("node B runs");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    until(Duration::from_secs(5), "B not ready once draining", || {
        b.http.get(&b.url("/readyz")).status == 503
    });
    assert_eq!(
        b.http.get(&b.url("/healthz")).status,
        200,
        "draining is healthy"
    );
    until(
        Duration::from_secs(5),
        "A sees B draining in the map",
        || {
            nodes(&a)
                .iter()
                .any(|n| n["id"] == "b" && n["draining"] == true)
        },
    );

    // New publishers are refused, over RTMP and WHIP.
    let (accepted, _p) = b.publish_accepted(&other.id, &other.stream_key, &b.data_dir);
    assert!(!accepted, "a draining node takes no new RTMP publisher");
    let whip = b
        .http
        .request(
            "POST",
            &b.whip_url(&other.id),
            &[
                ("content-type", "application/sdp"),
                ("authorization", &format!("Bearer {}", other.stream_key)),
            ],
            Some(b"v=0\r\n"),
        )
        .expect("WHIP POST");
    assert_eq!(whip.status, 503, "WHIP on a draining node: {}", whip.text());
    assert!(
        whip.header("retry-after").is_some(),
        "503 carries Retry-After"
    );

    // The live stream goes on to its end: the playlist keeps growing and
    // ends with ENDLIST, then the node exits 0 by itself.
    let before = fetch_media(&b.http, &b.media_url(&ch.id, "source"), "").pl;
    let mut last = before.clone();
    until(
        Duration::from_secs(30),
        "the playlist ends with ENDLIST",
        || {
            let Ok(r) = b.http.try_get(&b.media_url(&ch.id, "source")) else {
                return false;
            };
            match parse_media(&r.text()) {
                Ok(p) => {
                    let done = p.endlist;
                    last = p;
                    done
                }
                Err(_) => false,
            }
        },
    );
    assert!(
        last.segments.len() > before.segments.len(),
        "the stream kept growing while draining ({} -> {} segments)",
        before.segments.len(),
        last.segments.len()
    );
    let seconds: f64 = last.segments.iter().map(|s| s.duration).sum();
    assert!(
        seconds >= 9.0,
        "the stream played to its end: {seconds:.1} s of a 12-s publish"
    );
    let status = b
        .wait_exit(Duration::from_secs(20))
        .expect("node B exits after the drain");
    assert!(status.success(), "a drained node exits 0: {status}");
    publisher.stop();
    assert_eq!(
        node_ids(&a),
        ["a"],
        "a drained node leaves the map as it exits"
    );

    // A deadline cuts a stream that would not end: ENDLIST, exit 0.
    let mut c = fleet_node(
        tmp.path(),
        "c",
        &db,
        "redirect",
        "[drain]\ndeadline_s = 2.0\n",
    );
    let long = create(&c, "long");
    let mut steady = c.publish_live(&long, 1);
    let drained = c.api("POST", "/api/v1/node/drain", None);
    assert_eq!(
        drained.status,
        202,
        "POST /api/v1/node/drain: {}",
        drained.text()
    );
    let status = c
        .wait_exit(Duration::from_secs(20))
        .expect("node C exits at its deadline");
    assert!(status.success(), "exit 0 after the deadline: {status}");
    assert!(
        steady.wait_exit(Duration::from_secs(10)).is_some(),
        "the publisher was cut at the deadline"
    );
}

#[test]
fn public_url_with_https_and_a_prefix_is_in_every_url_and_served_under_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = NodeConfig {
        public_url: "https://edge.example:8443/tv/".into(),
        ..NodeConfig::default()
    };
    let node = Node::start_in(tmp.path(), cfg, &node_bin());
    let created = node.api("POST", "/api/v1/channels", Some(br#"{"name":"prefixed"}"#));
    assert_eq!(created.status, 201, "{}", created.text());
    let v = created.json();
    let id = v["id"].as_str().expect("id").to_string();
    let urls = [
        v["playback_url"].as_str().unwrap_or_default().to_string(),
        v["ingest"]["whip"].as_str().unwrap_or_default().to_string(),
    ];
    for u in &urls {
        assert!(
            u.starts_with("https://edge.example:8443/tv/"),
            "a returned URL carries public_url: {u} in {v}"
        );
    }
    assert!(
        v["ingest"]["rtmp"]
            .as_str()
            .is_some_and(|u| u.starts_with("rtmp://edge.example:")),
        "the RTMP URL names public_url's host: {v}"
    );
    let config = node.data_dir.join("e2e-config.toml");
    let listed = node.cli(&[
        "channel",
        "list",
        "--config",
        config.to_str().expect("utf-8 path"),
    ]);
    assert!(
        listed.contains(&format!("https://edge.example:8443/tv/play/{id}")),
        "the CLI prints public_url: {listed}"
    );
    assert!(
        !listed.contains("localhost"),
        "no other base in the CLI: {listed}"
    );

    // Served under the prefix, pages naming it.
    let page = node.http.get(&node.url(&format!("/tv/play/{id}")));
    assert_eq!(page.status, 200);
    assert!(
        page.text()
            .contains(&format!("\"/tv/hls/{id}/master.m3u8\"")),
        "{}",
        page.text()
    );
    assert_eq!(node.http.get(&node.url("/tv/healthz")).status, 200);
    let ch = Channel::from_json(v);
    let _publisher = node.publish_live(&ch, 1);
    let master = node
        .http
        .get(&node.url(&format!("/tv/hls/{id}/master.m3u8")));
    assert_eq!(
        master.status, 200,
        "the multivariant playlist under the prefix"
    );
    assert!(master.text().contains("#EXT-X-STREAM-INF"));
}
