//! Allowed origins, regions and networks end to end: a node with a small
//! GeoIP database this test writes (MaxMind format, FR and DE networks),
//! 127.0.0.1 as its trusted proxy, and one ffmpeg-published channel whose
//! rules the CLI and the API change. Addresses come from `X-Forwarded-For`
//! through the trusted proxy and are ignored from 127.0.0.2 (any loopback
//! address reaches the node on Linux); each refusal is 403 with its reason
//! on the multivariant playlist, a rendition playlist, an init segment and
//! a part, and ffmpeg plays an allowed case. In Chromium, a channel that
//! allows only the node's own origin plays on the node's `/play/<id>` page
//! and not on a page from another origin. Needs /usr/bin/chromium and
//! `npm install`, like tests/player.rs.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const FR: &str = "203.0.113.7";
const DE: &str = "198.51.100.7";
/// In no network of the database: no country.
const NOWHERE: &str = "192.0.2.50";

/// A GeoLite2-Country-shaped database: IPv6 tree with IPv4 under `::/96`,
/// `country.iso_code` per network.
fn write_geoip(path: &Path) {
    use maxminddb_writer::{Database, metadata::IpVersion, paths::IpAddrWithMask};
    #[derive(serde::Serialize)]
    struct Code {
        iso_code: &'static str,
    }
    #[derive(serde::Serialize)]
    struct Record {
        country: Code,
    }
    let mut db = Database::default();
    db.metadata.binary_format_major_version = 2;
    db.metadata.ip_version = IpVersion::V6;
    db.metadata.database_type = "GeoLite2-Country".into();
    for (net, code) in [("::203.0.113.0", "FR"), ("::198.51.100.0", "DE")] {
        let data = db
            .insert_value(Record {
                country: Code { iso_code: code },
            })
            .expect("record");
        let addr: IpAddr = net.parse().expect("address");
        db.insert_node(IpAddrWithMask::new(addr, 120), data);
    }
    let file = std::fs::File::create(path).expect("create the database");
    db.write_to(file).expect("write the database");
}

/// A GET sent from `source` (a loopback address), with `headers`: the status
/// and the `X-Rungs-Refusal` header.
fn get_from(source: [u8; 4], url: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let target: SocketAddr = authority.parse().expect("host:port");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = rt
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((source, 0)))?;
            socket.connect(target).await?.into_std()
        })
        .expect("connect from the given source address");
    drop(rt);
    let mut stream = stream;
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let refusal = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-rungs-refusal")
            .then(|| v.trim().to_string())
    });
    (status, refusal)
}

/// The URLs of one rendition: its playlist, init segment and newest part.
fn media_urls(http: &Http, node: &Node, id: &str, headers: &[(&str, &str)]) -> Vec<String> {
    let master = node.master_url(id);
    let source = node.media_url(id, "source");
    let text = http.get_h(&source, headers).text();
    let base = source.trim_end_matches("index.m3u8");
    let init = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|l| l.split('"').next())
        .unwrap_or_else(|| panic!("no EXT-X-MAP in\n{text}"));
    let part = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1))
        .filter_map(|l| l.split('"').next())
        .next_back()
        .unwrap_or_else(|| panic!("no EXT-X-PART in\n{text}"));
    vec![
        master,
        source.clone(),
        format!("{base}{init}"),
        format!("{base}{part}"),
    ]
}

/// Runs `rungs ARGS --data-dir DIR`: whether it succeeded, and its stderr.
fn cli_status(node: &Node, args: &[&str]) -> (bool, String) {
    let out = Command::new(node_bin())
        .args(args)
        .arg("--data-dir")
        .arg(&node.data_dir)
        .output()
        .expect("run rungs CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn countries_and_networks_through_the_trusted_proxy() {
    let _turn = take_turn();
    let f = Findings::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("countries.mmdb");
    write_geoip(&db);
    let access = format!(
        "[access]\ngeoip_database = {:?}\ntrusted_proxies = [\"127.0.0.1\"]\n",
        db.display().to_string()
    );
    let node = Node::start(NodeConfig {
        extra_toml: Box::leak(access.into_boxed_str()),
        ..NodeConfig::default()
    });
    let http = Http::new();
    let api = |method: &str, path: &str, body: &str| node.api(method, path, Some(body.as_bytes()));

    // Created by the CLI with a country and a network denied.
    let out = node.cli(&[
        "channel",
        "create",
        "--name",
        "geo",
        "--ladder",
        "passthrough",
        "--deny-country",
        "fr",
        "--deny-cidr",
        "192.0.2.0/24",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("channel JSON");
    f.check(
        v["deny_countries"] == serde_json::json!(["FR"])
            && v["deny_cidrs"] == serde_json::json!(["192.0.2.0/24"]),
        "the CLI stores the rules normalized",
        || v.to_string(),
    );
    let ch = Channel::from_json(v);
    let (ok, err) = cli_status(
        &node,
        &[
            "channel",
            "update",
            &ch.id,
            "--allow-origin",
            "https://a.example/x",
        ],
    );
    f.check(
        !ok && err.contains("allowed_origins"),
        "the CLI refuses an origin with a path, naming the field",
        || err.clone(),
    );
    let shown = node.cli(&["channel", "show", &ch.id]);
    f.check(
        shown.contains("not FR") && shown.contains("not 192.0.2.0/24"),
        "channel show prints the rules",
        || shown.clone(),
    );

    let publisher = node.publish_live(&ch, 1);
    let urls = media_urls(&http, &node, &ch.id, &[]);

    // (rule, source address, X-Forwarded-For, want: None plays, Some refuses).
    type Case = (
        &'static str,
        [u8; 4],
        Option<&'static str>,
        Option<&'static str>,
    );
    let check = |phase: &str, cases: &[Case]| {
        for (what, source, forwarded, want) in cases {
            let headers: Vec<(&str, &str)> = forwarded
                .map(|x| ("X-Forwarded-For", x))
                .into_iter()
                .collect();
            for url in &urls {
                let (status, refusal) = get_from(*source, url, &headers);
                let ok = match want {
                    None => status == 200,
                    Some(reason) => status == 403 && refusal.as_deref() == Some(*reason),
                };
                f.check(ok, what, || {
                    format!(
                        "{phase}: {url} from {source:?} XFF {forwarded:?}: {status} {refusal:?}"
                    )
                });
            }
        }
    };
    let deny_fr = format!("{FR}, 127.0.0.1");
    check(
        "deny FR and 192.0.2.0/24",
        &[
            ("the trusted proxy itself plays", [127, 0, 0, 1], None, None),
            (
                "DE via the trusted proxy plays",
                [127, 0, 0, 1],
                Some(DE),
                None,
            ),
            (
                "FR via the trusted proxy is refused",
                [127, 0, 0, 1],
                Some(FR),
                Some("region"),
            ),
            (
                "the right-most untrusted entry counts",
                [127, 0, 0, 1],
                Some(Box::leak(deny_fr.into_boxed_str())),
                Some("region"),
            ),
            (
                "a forged left-most entry does not count",
                [127, 0, 0, 1],
                Some("198.51.100.1, 203.0.113.9"),
                Some("region"),
            ),
            (
                "a denied network is refused",
                [127, 0, 0, 1],
                Some(NOWHERE),
                Some("network"),
            ),
            (
                "an untrusted peer's header is ignored",
                [127, 0, 0, 2],
                Some(FR),
                None,
            ),
        ],
    );

    // ffmpeg through the trusted proxy: DE plays, FR does not.
    let ffmpeg = |xff: &str| {
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-headers"])
            .arg(format!("X-Forwarded-For: {xff}\r\n"))
            .arg("-i")
            .arg(node.master_url(&ch.id))
            .args(["-t", "3", "-f", "null", "-"])
            .output()
            .expect("run ffmpeg")
    };
    let de = ffmpeg(DE);
    f.check(de.status.success(), "ffmpeg plays from DE", || {
        String::from_utf8_lossy(&de.stderr).into_owned()
    });
    let fr = ffmpeg(FR);
    f.check(!fr.status.success(), "ffmpeg is refused from FR", || {
        String::from_utf8_lossy(&fr.stderr).into_owned()
    });

    // Only DE, through the API: applies at once.
    let path = format!("/api/v1/channels/{}", ch.id);
    let r = api(
        "PATCH",
        &path,
        r#"{"deny_countries": [], "deny_cidrs": [], "allow_countries": ["de"]}"#,
    );
    f.check(
        r.status == 200
            && r.json()["allow_countries"] == serde_json::json!(["DE"])
            && r.json()["deny_countries"] == serde_json::json!([]),
        "PATCH allow_countries",
        || r.text(),
    );
    check(
        "allow DE",
        &[
            (
                "DE via the trusted proxy plays",
                [127, 0, 0, 1],
                Some(DE),
                None,
            ),
            (
                "FR is not allowed",
                [127, 0, 0, 1],
                Some(FR),
                Some("region"),
            ),
            (
                "an unknown country is not allowed",
                [127, 0, 0, 1],
                Some(NOWHERE),
                Some("region"),
            ),
            (
                "the proxy's own address has no country",
                [127, 0, 0, 1],
                None,
                Some("region"),
            ),
            (
                "an untrusted peer's header is ignored",
                [127, 0, 0, 2],
                Some(DE),
                Some("region"),
            ),
        ],
    );

    // Only DE's network, through the CLI: applies within the node's refresh.
    node.cli(&[
        "channel",
        "update",
        &ch.id,
        "--allow-country",
        "",
        "--allow-cidr",
        "198.51.100.0/24",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    check(
        "allow 198.51.100.0/24",
        &[
            ("an allowed network plays", [127, 0, 0, 1], Some(DE), None),
            (
                "outside the allowed network",
                [127, 0, 0, 1],
                Some(FR),
                Some("network"),
            ),
            (
                "the proxy itself is outside",
                [127, 0, 0, 1],
                None,
                Some("network"),
            ),
            (
                "an untrusted peer's header is ignored",
                [127, 0, 0, 2],
                Some(DE),
                Some("network"),
            ),
        ],
    );

    // The API names the field it refuses; GET shows the rules.
    for (body, field) in [
        (
            r#"{"allowed_origins": ["https://a.example/page"]}"#,
            "allowed_origins",
        ),
        (r#"{"deny_countries": ["FRA"]}"#, "deny_countries"),
        (r#"{"allow_cidrs": ["10.0.0.0/33"]}"#, "allow_cidrs"),
        (r#"{"play_hook": "ftp://backend.example/"}"#, "play_hook"),
    ] {
        let r = api("PATCH", &path, body);
        f.check(
            r.status == 400 && r.text().contains(field),
            "a bad rule is 400 naming the field",
            || format!("{body}: {} {}", r.status, r.text()),
        );
    }
    let r = api(
        "POST",
        "/api/v1/channels",
        r#"{"name": "bad", "allowed_origins": ["nope"]}"#,
    );
    f.check(
        r.status == 400 && r.text().contains("allowed_origins"),
        "POST with a bad origin is refused",
        || r.text(),
    );
    let listed = api("GET", "/api/v1/channels", "").json();
    f.check(
        listed.as_array().is_some_and(|a| a.len() == 1),
        "a refused POST creates nothing",
        || listed.to_string(),
    );
    let r = api("GET", &path, "");
    let v = r.json();
    f.check(
        v["allow_cidrs"] == serde_json::json!(["198.51.100.0/24"])
            && v["allow_countries"] == serde_json::json!([])
            && v["allowed_origins"] == serde_json::json!([])
            && v["play_hook"].is_null(),
        "GET shows the rules",
        || v.to_string(),
    );

    let m = node.metrics();
    for reason in ["region", "network"] {
        let n = m.sum("rungs_play_refused_total", &[("reason", reason)]);
        f.check(n >= 4.0, "refusals are counted by reason", || {
            format!("{reason}: {n}")
        });
    }
    let log = node.log();
    f.check(
        !log.contains(FR) && !log.contains(DE),
        "client addresses are not logged",
        String::new,
    );
    drop(publisher);
    f.assert_empty("regions");
}

#[test]
fn allowed_origins_play_on_the_own_origin_only() {
    require_browser();
    let _turn = take_turn();
    let f = Findings::default();
    let node = Node::start(NodeConfig::default());
    let own = node.url("");
    let body =
        format!(r#"{{"name": "site", "ladder": "passthrough", "allowed_origins": ["{own}/"]}}"#);
    let r = node.api("POST", "/api/v1/channels", Some(body.as_bytes()));
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    f.check(
        v["allowed_origins"] == serde_json::json!([own]),
        "the origin is stored without its slash",
        || v.to_string(),
    );
    let ch = Channel::from_json(v);
    let open = node.create_channel("open");

    let publisher = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts::default(),
        &node.data_dir,
    );
    node.attach_log(&publisher.log_path);
    let http = Http::new();
    let master = node.master_url(&ch.id);
    let source = node.media_url(&ch.id, "source");
    let from_own = [("Origin", own.as_str())];
    wait_for(Duration::from_secs(30), Duration::from_millis(300), || {
        let r = http.get_h(&source, &from_own);
        (r.status == 200 && r.text().contains("#EXTINF")).then_some(())
    })
    .unwrap_or_else(|| panic!("no playlist; ffmpeg:\n{}", publisher.log()));

    // Every kind of URL: the own origin (or a Referer from its pages)
    // plays, with CORS echoing it; another origin, or none, is refused and
    // gets no CORS header.
    let urls = media_urls(&http, &node, &ch.id, &from_own);
    let other = "http://localhost:1";
    let referer = format!("{own}/play/{}", ch.id);
    for url in &urls {
        let r = http.get_h(url, &from_own);
        f.check(
            r.status == 200
                && r.header("access-control-allow-origin") == Some(own.as_str())
                && r.headers.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("vary") && v.to_ascii_lowercase().contains("origin")
                }),
            "the own origin plays, CORS echoes it",
            || format!("{url}: {} {:?}", r.status, r.headers),
        );
        let r = http.get_h(url, &[("Referer", referer.as_str())]);
        f.check(
            r.status == 200,
            "a Referer from the own origin plays",
            || format!("{url}: {}", r.status),
        );
        for headers in [vec![("Origin", other)], vec![]] {
            let r = http.get_h(url, &headers);
            f.check(
                r.status == 403
                    && r.header("x-rungs-refusal") == Some("origin")
                    && r.header("access-control-allow-origin").is_none(),
                "another origin, or none, is refused without CORS",
                || format!("{url} {headers:?}: {} {:?}", r.status, r.headers),
            );
        }
    }
    // A preflight from another origin gets no CORS permission either.
    let r = node
        .http
        .request(
            "OPTIONS",
            &master,
            &[("Origin", other), ("Access-Control-Request-Method", "GET")],
            None,
        )
        .expect("preflight");
    f.check(
        r.header("access-control-allow-origin").is_none(),
        "no CORS on another origin's preflight",
        || format!("{:?}", r.headers),
    );
    // A channel without allowed origins keeps `*`.
    let r = http.get_h(&node.master_url(&open.id), &[("Origin", other)]);
    f.check(
        r.header("access-control-allow-origin") == Some("*"),
        "other channels keep CORS *",
        || format!("{} {:?}", r.status, r.headers),
    );

    // In Chromium: a page on another origin fails, the node's own page plays.
    let play_page = node.url(&format!("/play/{}", ch.id));
    let rep = run_page_script("tests/player/origins.mjs", &[&master, &play_page]);
    let other_page = &rep["other"];
    f.check(
        other_page["playing"] == false
            && other_page["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["fatal"] == true)),
        "a page on another origin cannot play",
        || rep.to_string(),
    );
    f.check(
        rep["own_played"] == true,
        "the node's own page plays",
        || rep.to_string(),
    );
    drop(publisher);
    f.assert_empty("allowed origins");
}
