//! Channel lifecycle: persistence across restarts, key rotation, the admin
//! HTTP API and its authentication, and keys never reaching the log.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn auth(node: &Node) -> String {
    format!("Bearer {}", node.token)
}

fn api(node: &Node, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Resp {
    let mut h: Vec<(&str, &str)> = Vec::new();
    if let Some(t) = token {
        h.push(("Authorization", t));
    }
    if body.is_some() {
        h.push(("Content-Type", "application/json"));
    }
    node.http
        .request(method, &node.admin_url(path), &h, body.map(str::as_bytes))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ids_in(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a JSON array of channels, got {v}"))
        .iter()
        .map(|c| {
            c["id"]
                .as_str()
                .unwrap_or_else(|| panic!("channel without id: {c}"))
                .to_string()
        })
        .collect()
}

fn cli_list(node: &Node) -> Vec<String> {
    let out = node.cli(&["channel", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("channel list --json: {e}: {out:?}"));
    ids_in(&v)
}

#[test]
fn channels_survive_restart_and_api_requires_token() {
    let f = Findings::default();
    let dir = tempfile::Builder::new()
        .prefix("rungs-e2e-")
        .tempdir()
        .unwrap();
    let mut keys = Vec::new();
    let node1 = Node::start_in(dir.path(), NodeConfig::default(), &node_bin());
    let token_path = dir.path().join("admin-token");
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    f.check(mode == 0o600, "admin-token has mode 0600", || {
        format!("mode {mode:o}")
    });

    // One channel from the CLI, one from the API, while the node runs.
    let a = node1.create_channel("alpha");
    keys.push(a.stream_key.clone());
    let r = api(
        &node1,
        "POST",
        "/api/v1/channels",
        Some(&auth(&node1)),
        Some(r#"{"name": "beta"}"#),
    );
    assert_eq!(r.status, 201, "POST /api/v1/channels: {}", r.text());
    let b = Channel::from_json(r.json());
    keys.push(b.stream_key.clone());
    assert_eq!(b.name, "beta");
    assert!(
        !b.stream_key.is_empty() && b.stream_key != a.stream_key,
        "distinct, non-empty keys"
    );
    let cj = &a.json;
    f.check(
        cj["ingest"]["rtmp"]
            .as_str()
            .is_some_and(|u| u.starts_with("rtmp://") && u.ends_with("/live")),
        "channel JSON ingest.rtmp = rtmp://HOST:PORT/live",
        || format!("{cj}"),
    );
    f.check(
        cj["playback_url"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/hls/{}/master.m3u8", a.id))),
        "channel JSON playback_url = http://HOST:PORT/hls/ID/master.m3u8",
        || format!("{cj}"),
    );
    let cli_ids = cli_list(&node1);
    f.check(
        cli_ids.contains(&a.id) && cli_ids.contains(&b.id),
        "CLI list shows channels made by CLI and API",
        || format!("{cli_ids:?}"),
    );
    let plain = node1.cli(&["channel", "list"]);
    f.check(
        plain.contains(&a.id),
        "plain `channel list` shows the id",
        || plain.clone(),
    );

    // Restart on the same data dir.
    let mut node1 = node1;
    let old_token = node1.token.clone();
    let log1 = node1.log();
    node1.stop(Duration::from_secs(5));
    drop(node1);
    let node2 = Node::start_in(dir.path(), NodeConfig::default(), &node_bin());
    f.check(
        node2.token == old_token,
        "admin token kept across restarts",
        || "token changed".into(),
    );
    let cli_ids = cli_list(&node2);
    f.check(
        cli_ids.contains(&a.id) && cli_ids.contains(&b.id),
        "channels survive a restart (CLI list)",
        || format!("{cli_ids:?}"),
    );
    let r = api(&node2, "GET", "/api/v1/channels", Some(&auth(&node2)), None);
    assert_eq!(r.status, 200, "GET /api/v1/channels: {}", r.text());
    let api_ids = ids_in(&r.json());
    f.check(
        api_ids.contains(&a.id) && api_ids.contains(&b.id),
        "channels survive a restart (API list)",
        || format!("{api_ids:?}"),
    );
    let r = api(
        &node2,
        "GET",
        &format!("/api/v1/channels/{}", b.id),
        Some(&auth(&node2)),
        None,
    );
    f.check(
        r.status == 200 && r.json()["name"] == "beta",
        "GET /api/v1/channels/{id} after restart",
        || format!("{} {}", r.status, r.text()),
    );
    let (ok, mut p) = node2.publish_accepted(&b.id, &b.stream_key, &node2.data_dir);
    f.check(
        ok,
        "publishing works after a restart (API-made channel)",
        || p.log(),
    );
    p.stop();

    // Authentication.
    for (method, path, body) in [
        ("GET", "/api/v1/channels".to_string(), None),
        (
            "POST",
            "/api/v1/channels".to_string(),
            Some(r#"{"name":"x"}"#),
        ),
        ("GET", format!("/api/v1/channels/{}", a.id), None),
        ("DELETE", format!("/api/v1/channels/{}", a.id), None),
        (
            "POST",
            format!("/api/v1/channels/{}/rotate-key", a.id),
            None,
        ),
    ] {
        for tok in [
            None,
            Some("Bearer wrong-token"),
            Some("Basic YWRtaW46YWRtaW4="),
        ] {
            let r = api(&node2, method, &path, tok, body);
            f.check(
                r.status == 401,
                "API answers 401 without / with a wrong token",
                || format!("{method} {path} with {tok:?}: {} {}", r.status, r.text()),
            );
        }
        let r = api(&node2, method, &path, Some(&node2.token), body);
        f.check(
            r.status == 401,
            "API answers 401 to the token without `Bearer`",
            || format!("{method} {path}: {}", r.status),
        );
    }
    let still = cli_list(&node2);
    f.check(
        still.contains(&a.id),
        "unauthenticated DELETE deleted nothing",
        || format!("{still:?}"),
    );

    // Create / get / list / delete via the API.
    let r = api(
        &node2,
        "POST",
        "/api/v1/channels",
        Some(&auth(&node2)),
        Some(r#"{"name": "gamma"}"#),
    );
    assert_eq!(r.status, 201, "POST: {}", r.text());
    let g = Channel::from_json(r.json());
    keys.push(g.stream_key.clone());
    let r = api(
        &node2,
        "GET",
        &format!("/api/v1/channels/{}", g.id),
        Some(&auth(&node2)),
        None,
    );
    f.check(
        r.status == 200 && r.json()["id"] == g.id.as_str(),
        "GET created channel",
        || format!("{} {}", r.status, r.text()),
    );
    let r = api(&node2, "GET", "/api/v1/channels", Some(&auth(&node2)), None);
    f.check(
        ids_in(&r.json()).contains(&g.id),
        "API list shows created channel",
        || r.text(),
    );
    let r = api(
        &node2,
        "DELETE",
        &format!("/api/v1/channels/{}", g.id),
        Some(&auth(&node2)),
        None,
    );
    f.check(r.status == 204, "DELETE -> 204", || {
        format!("{} {}", r.status, r.text())
    });
    let r = api(
        &node2,
        "GET",
        &format!("/api/v1/channels/{}", g.id),
        Some(&auth(&node2)),
        None,
    );
    f.check(r.status == 404, "GET deleted channel -> 404", || {
        format!("{} {}", r.status, r.text())
    });
    let r = api(
        &node2,
        "DELETE",
        &format!("/api/v1/channels/{}", g.id),
        Some(&auth(&node2)),
        None,
    );
    f.check(r.status == 404, "DELETE unknown channel -> 404", || {
        format!("{} {}", r.status, r.text())
    });
    f.check(
        !cli_list(&node2).contains(&g.id),
        "deleted channel gone from CLI list",
        || "still listed".into(),
    );
    let (ok, _p) = node2.publish_accepted(&g.id, &g.stream_key, &node2.data_dir);
    f.check(!ok, "deleted channel's key is refused", || {
        "publish accepted".into()
    });
    // Bad request bodies are client errors, not server errors or creations.
    for body in ["not json", r#"{"nom": "x"}"#, r#"{"name": ""}"#] {
        let r = api(
            &node2,
            "POST",
            "/api/v1/channels",
            Some(&auth(&node2)),
            Some(body),
        );
        f.check(
            (400..500).contains(&r.status),
            "invalid create body -> 4xx",
            || format!("{body:?}: {} {}", r.status, r.text()),
        );
    }
    let r = api(
        &node2,
        "GET",
        "/api/v1/channels/no-such-id",
        Some(&auth(&node2)),
        None,
    );
    f.check(r.status == 404, "GET unknown channel -> 404", || {
        format!("{}", r.status)
    });

    let log = format!("{log1}\n{}", node2.log());
    for k in &keys {
        f.check(
            !log.contains(k.as_str()),
            "stream keys never in the node log",
            || "a key is in the log".into(),
        );
    }
    // The admin token is printed once, on first start ("shown only now"): by design, not checked.
    f.assert_empty("channels_survive_restart_and_api_requires_token");
}

#[test]
fn rotate_key_refuses_old_accepts_new() {
    let f = Findings::default();
    let node = Node::start(NodeConfig::default());
    let ch = node.create_channel("rotating");
    let k1 = ch.stream_key.clone();
    let out = node.cli(&["channel", "rotate-key", &ch.id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("rotate-key --json: {e}: {out:?}"));
    let r1 = Channel::from_json(v);
    let k2 = r1.stream_key.clone();
    assert_eq!(r1.id, ch.id, "rotate keeps the id");
    assert_ne!(k1, k2, "rotate-key gives a new key");

    let rej0 = node.metrics().sum("rungs_ingest_rejected_total", &[]);
    let (ok, _p) = node.publish_accepted(&ch.id, &k1, &node.data_dir);
    f.check(!ok, "old key refused after CLI rotate-key", || {
        "accepted".into()
    });
    let rej1 = node.metrics().sum("rungs_ingest_rejected_total", &[]);
    f.check(rej1 > rej0, "refusal of the old key is counted", || {
        format!("{rej0} -> {rej1}")
    });
    let (ok, mut p) = node.publish_accepted(&ch.id, &k2, &node.data_dir);
    f.check(ok, "new key accepted after CLI rotate-key", || p.log());
    p.stop();

    // Rotate through the API (the publisher has stopped).
    std::thread::sleep(Duration::from_millis(500));
    let r = api(
        &node,
        "POST",
        &format!("/api/v1/channels/{}/rotate-key", ch.id),
        Some(&auth(&node)),
        None,
    );
    assert_eq!(r.status, 200, "POST rotate-key: {}", r.text());
    let r2 = Channel::from_json(r.json());
    let k3 = r2.stream_key.clone();
    assert_ne!(k3, k2);
    let (ok, _p) = node.publish_accepted(&ch.id, &k2, &node.data_dir);
    f.check(!ok, "old key refused after API rotate-key", || {
        "accepted".into()
    });
    let frames0 = node
        .metrics()
        .sum("rungs_ingest_frames_total", &[("channel", ch.id.as_str())]);
    let mut p = Publisher::start(&node.rtmp_url(&k3), &PubOpts::default(), &node.data_dir);
    node.attach_log(&p.log_path);
    let st = p.wait_exit(Duration::from_secs(6));
    f.check(
        st.is_none(),
        "new key accepted after API rotate-key",
        || p.log(),
    );
    let frames1 = node
        .metrics()
        .sum("rungs_ingest_frames_total", &[("channel", ch.id.as_str())]);
    f.check(
        frames1 > frames0 + 100.0,
        "frames ingested with the new key",
        || format!("{frames0} -> {frames1}"),
    );
    // Deleting through the CLI while live: gone from the list, and the
    // running node ends the stream (it was not told; it notices).
    let http = Http::new();
    let src = node.media_url(&ch.id, "source");
    let live = wait_for(Duration::from_secs(15), Duration::from_millis(250), || {
        (http.get(&src).status == 200).then_some(())
    });
    f.check(live.is_some(), "live before the CLI delete", || p.log());
    node.cli(&["channel", "delete", &ch.id]);
    f.check(
        !cli_list(&node).contains(&ch.id),
        "CLI delete removes the channel",
        || "still listed".into(),
    );
    let ended = wait_for(Duration::from_secs(8), Duration::from_millis(250), || {
        let r = http.get(&src);
        (r.status == 404 || r.text().contains("#EXT-X-ENDLIST")).then_some(r.status)
    });
    f.check(
        ended.is_some(),
        "a live stream ends when the CLI deletes its channel",
        || format!("{src} still live"),
    );
    p.stop();
    let (ok, _p) = node.publish_accepted(&ch.id, &k3, &node.data_dir);
    f.check(!ok, "deleted channel's key refused", || "accepted".into());

    let log = node.log();
    for k in [&k1, &k2, &k3] {
        f.check(
            !log.contains(k.as_str()),
            "stream keys never in the node log",
            || "a key is in the log".into(),
        );
    }
    f.assert_empty("rotate_key_refuses_old_accepts_new");
}
