//! A node on the open internet: half-sent requests are closed by the header
//! timeout, connections past the cap are refused while established players
//! keep being served, parked blocking reloads past their cap get 503 at once
//! while the live channel keeps its GOPs, and the operator's surfaces
//! (`/metrics`, `/api/v1`) are on the admin port only.

mod common;

use common::*;
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// An HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

async fn read_response(s: &mut TcpStream) -> io::Result<Raw> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut r = Raw {
                status,
                head,
                body: buf[end + 4..].to_vec(),
            };
            let len: usize = r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while r.body.len() < len {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                r.body.extend_from_slice(&chunk[..n]);
            }
            return Ok(r);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// GET `path` on an open (keep-alive) connection.
async fn get_on(s: &mut TcpStream, path: &str) -> io::Result<Raw> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: node\r\n\r\n").as_bytes())
        .await?;
    read_response(s).await
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the node")
}

/// A connection that sends half a request line and no more.
async fn half_request(port: u16) -> (TcpStream, Instant) {
    let mut s = connect(port).await;
    let at = Instant::now();
    s.write_all(b"GET /hls/")
        .await
        .expect("half a request line");
    (s, at)
}

/// `n` such connections.
async fn half_requests(port: u16, n: usize) -> Vec<(TcpStream, Instant)> {
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        socks.push(half_request(port).await);
    }
    socks
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A live passthrough channel on `node`, with its source playlist's URL path.
fn live_channel(node: &Node, dir: &std::path::Path) -> (Channel, Publisher, String) {
    let ch = node.create_channel("limits");
    let publisher = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts {
            preset: "ultrafast",
            ..PubOpts::default()
        },
        dir,
    );
    node.attach_log(&publisher.log_path);
    let http = Http::new();
    wait_playlist(
        &http,
        &node.media_url(&ch.id, "source"),
        1,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("no live playlist; ffmpeg log:\n{}", publisher.log()));
    let path = format!("/hls/{}/source/index.m3u8", ch.id);
    (ch, publisher, path)
}

fn metric(node: &Node, name: &str, labels: &[(&str, &str)]) -> f64 {
    node.metrics().sum(name, labels)
}

fn wait_metric(node: &Node, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
    wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        let v = metric(node, name, labels);
        (v >= at_least).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "{name}{labels:?} stayed below {at_least}: {}",
            metric(node, name, labels)
        )
    })
}

#[test]
fn half_sent_requests_are_closed_within_the_header_timeout() {
    let _turn = take_turn();
    raise_open_files(12_000);
    const SOCKETS: usize = 2_000;
    let header_timeout = Duration::from_secs(2);
    let node = Node::start(NodeConfig {
        http: HttpLimits {
            header_timeout_s: header_timeout.as_secs_f64(),
            ..HttpLimits::default()
        },
        ..NodeConfig::default()
    });
    let dir = node.data_dir.clone();
    let (_ch, _publisher, playlist) = live_channel(&node, &dir);
    let timed_out = [("listener", "player"), ("reason", "header_timeout")];
    let before = metric(&node, "rungs_http_timed_out_connections_total", &timed_out);
    let rt = runtime();
    let port = node.http_port;
    // A player that keeps its connection and asks at once.
    let mut player = rt.block_on(async {
        let mut s = connect(port).await;
        assert_eq!(
            get_on(&mut s, "/healthz").await.expect("healthz").status,
            200
        );
        s
    });
    let opening = Instant::now();
    let closes = rt.block_on(async {
        // Each socket is watched from the moment it is open: its close is
        // seen when it happens, however long opening the others takes.
        let mut waits = JoinSet::new();
        for _ in 0..SOCKETS {
            let (mut s, at) = half_request(port).await;
            waits.spawn(async move {
                let mut b = [0u8; 64];
                let read = tokio::time::timeout(Duration::from_secs(20), s.read(&mut b)).await;
                // EOF or a reset: the node let go of it.
                let closed = matches!(read, Ok(Ok(0)) | Ok(Err(_)));
                (closed, at.elapsed())
            });
        }
        let opened_in = opening.elapsed();
        // The player is served meanwhile, on its connection and on new ones.
        let r = get_on(&mut player, &playlist).await.expect("playlist");
        assert_eq!(r.status, 200, "{r:?}");
        let mut fresh = connect(port).await;
        let r = get_on(&mut fresh, &playlist).await.expect("playlist");
        assert_eq!(r.status, 200, "{r:?}");
        (waits.join_all().await, opened_in)
    });
    let (closes, opened_in) = closes;
    let open_for: Vec<Duration> = closes
        .iter()
        .map(|(closed, after)| {
            assert!(closed, "a half-sent request was never closed");
            *after
        })
        .collect();
    let slowest = open_for.iter().max().copied().unwrap_or_default();
    let quickest = open_for.iter().min().copied().unwrap_or_default();
    eprintln!(
        "{SOCKETS} half-sent requests opened in {opened_in:?}, each closed {quickest:?}..{slowest:?} after it opened"
    );
    // The node counts from its accept, which on a loaded 2-core machine
    // can trail our connect by seconds of accept queue: the bound is that
    // no socket outlives the timeout by more than its own length again.
    assert!(
        slowest < header_timeout * 2 + Duration::from_secs(1),
        "closed up to {slowest:?} after opening, header timeout {header_timeout:?}"
    );
    assert!(
        quickest >= header_timeout - Duration::from_millis(100),
        "closed after {quickest:?}: before the header timeout"
    );
    let after = wait_metric(
        &node,
        "rungs_http_timed_out_connections_total",
        &timed_out,
        before + SOCKETS as f64,
    );
    assert_eq!(after - before, SOCKETS as f64);
    // The player's connection idles much longer than the header timeout.
    let r = rt
        .block_on(get_on(&mut player, "/healthz"))
        .expect("the keep-alive player is still connected");
    assert_eq!(r.status, 200);
}

#[test]
fn connections_past_the_cap_are_refused_while_players_are_served() {
    let _turn = take_turn();
    raise_open_files(12_000);
    const HELD: usize = 1_000;
    const REFUSED: usize = 200;
    let node = Node::start(NodeConfig {
        http: HttpLimits {
            header_timeout_s: 60.0,
            // The held sockets and one player.
            max_connections: HELD + 1,
            ..HttpLimits::default()
        },
        ..NodeConfig::default()
    });
    let dir = node.data_dir.clone();
    let (_ch, _publisher, playlist) = live_channel(&node, &dir);
    let refused_label = [("listener", "player"), ("reason", "too_many_connections")];
    let rt = runtime();
    let port = node.http_port;
    let mut player = rt.block_on(async {
        let mut s = connect(port).await;
        assert_eq!(
            get_on(&mut s, "/healthz").await.expect("healthz").status,
            200
        );
        s
    });
    let mut held = rt.block_on(half_requests(port, HELD));
    wait_metric(
        &node,
        "rungs_http_connections",
        &[("listener", "player")],
        (HELD + 1) as f64,
    );
    let before = metric(
        &node,
        "rungs_http_refused_connections_total",
        &refused_label,
    );
    let refusals = rt.block_on(async {
        let mut tries = JoinSet::new();
        for _ in 0..REFUSED {
            tries.spawn(async move {
                let mut s = connect(port).await;
                get_on(&mut s, "/healthz").await
            });
        }
        tries.join_all().await
    });
    for r in &refusals {
        let r = r.as_ref().expect("a refusal is an answer, then a close");
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    }
    let after = metric(
        &node,
        "rungs_http_refused_connections_total",
        &refused_label,
    );
    assert_eq!(after - before, REFUSED as f64);
    // The player that was in keeps being served: health, its playlist and
    // a blocking reload for the next part of the live channel.
    rt.block_on(async {
        assert_eq!(
            get_on(&mut player, "/healthz")
                .await
                .expect("healthz")
                .status,
            200
        );
        let r = get_on(&mut player, &playlist).await.expect("playlist");
        assert_eq!(r.status, 200, "{r:?}");
        let pl = parse_media(&String::from_utf8_lossy(&r.body)).expect("media playlist");
        let (m, p) = pl.next_part();
        let r = get_on(
            &mut player,
            &format!("{playlist}?_HLS_msn={m}&_HLS_part={p}"),
        )
        .await
        .expect("blocking reload");
        assert_eq!(r.status, 200, "{r:?}");
    });
    // The operator's port has its own budget.
    assert_eq!(
        node.http.get(&node.admin_url("/healthz")).status,
        200,
        "admin /healthz"
    );
    // Room again once some leave.
    held.truncate(HELD - 10);
    let back = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        rt.block_on(async {
            let mut s = connect(port).await;
            get_on(&mut s, "/healthz")
                .await
                .ok()
                .filter(|r| r.status == 200)
        })
    });
    assert!(back.is_some(), "no connection accepted after others closed");
}

#[test]
fn parked_requests_past_the_cap_get_503_at_once_and_the_channel_keeps_its_gops() {
    let _turn = take_turn();
    raise_open_files(12_000);
    const CAP: usize = 1_000;
    const MORE: usize = 2_000;
    // Long segments give the test a wide window while the first requests
    // stay parked: two of them, 10 s, so that on a loaded 2-core machine
    // the whole burst of refusals fits before the first parked answer.
    let node = Node::start(NodeConfig {
        segment_target_s: 5.0,
        http: HttpLimits {
            max_blocked_requests: CAP,
            ..HttpLimits::default()
        },
        ..NodeConfig::default()
    });
    let dir = node.data_dir.clone();
    let (ch, _publisher, playlist) = live_channel(&node, &dir);
    let http = Http::new();
    let url = node.url(&playlist);
    let c = [("channel", ch.id.as_str())];
    let m0 = node.metrics();
    let dropped_gops0 = m0.sum("rungs_rung_dropped_gops_total", &c);
    let dropped_packets0 = m0.sum("rungs_ingest_dropped_packets_total", &c);
    let parts0 = m0.sum("rungs_parts_published_total", &c);
    let refused0 = m0.sum(
        "rungs_http_refused_requests_total",
        &[("reason", "too_many_blocked")],
    );
    // Start just after a segment completes: the one two ahead is then a
    // whole segment and more away.
    let now = fetch_media(&http, &url, "");
    let last = now.pl.last_msn().expect("a complete segment");
    let fresh = fetch_media(&http, &url, &format!("_HLS_msn={}", last + 1));
    let target = fresh.pl.last_msn().expect("a complete segment") + 2;
    let wait_path = format!("{playlist}?_HLS_msn={target}");
    let rt = runtime();
    let port = node.http_port;
    let started = Instant::now();
    let mut parked = JoinSet::new();
    for _ in 0..CAP {
        let path = wait_path.clone();
        parked.spawn_on(
            async move {
                let mut s = connect(port).await;
                let r = get_on(&mut s, &path).await;
                (r, Instant::now())
            },
            rt.handle(),
        );
    }
    wait_metric(&node, "rungs_hls_blocked_requests", &[], CAP as f64);
    let refusals = rt.block_on(async {
        let mut more = JoinSet::new();
        for _ in 0..MORE {
            let path = wait_path.clone();
            more.spawn(async move {
                let mut s = connect(port).await;
                let sent = Instant::now();
                let r = get_on(&mut s, &path).await;
                (r, sent.elapsed(), Instant::now())
            });
        }
        more.join_all().await
    });
    let refused_at = started.elapsed();
    let mut slowest = Duration::ZERO;
    let mut last_refusal = started;
    for (r, took, at) in &refusals {
        let r = r.as_ref().expect("an answer");
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
        slowest = slowest.max(*took);
        last_refusal = last_refusal.max(*at);
    }
    let still_parked = metric(&node, "rungs_hls_blocked_requests", &[]);
    assert_eq!(
        still_parked, CAP as f64,
        "the first {CAP} were still parked when the others were refused"
    );
    let answered = rt.block_on(parked.join_all());
    // "At once" is judged against the parked requests, not a wall-clock
    // bound: the accept queue of a busy 2-core machine delays every
    // connection alike, but a refusal must never wait for the segment.
    let first_parked_answer = answered
        .iter()
        .map(|(_, at)| *at)
        .min()
        .expect("parked requests");
    for (r, _) in &answered {
        let r = r.as_ref().expect("an answer");
        assert_eq!(r.status, 200, "{r:?}");
        let pl = parse_media(&String::from_utf8_lossy(&r.body)).expect("media playlist");
        assert!(pl.last_msn() >= Some(target), "segment {target} listed");
    }
    eprintln!(
        "{MORE} refusals within {refused_at:?} of the start (slowest {slowest:?}); {CAP} parked answered after {:?}",
        started.elapsed()
    );
    assert!(
        last_refusal < first_parked_answer,
        "a refusal ({:?}) came after a parked request was answered ({:?})",
        last_refusal - started,
        first_parked_answer - started
    );
    let m1 = node.metrics();
    let refused = m1.sum(
        "rungs_http_refused_requests_total",
        &[("reason", "too_many_blocked")],
    );
    assert_eq!(refused - refused0, MORE as f64);
    assert_eq!(
        m1.sum("rungs_rung_dropped_gops_total", &c),
        dropped_gops0,
        "GOPs dropped"
    );
    assert_eq!(
        m1.sum("rungs_ingest_dropped_packets_total", &c),
        dropped_packets0,
        "packets dropped"
    );
    assert!(m1.sum("rungs_parts_published_total", &c) > parts0 + 20.0);
    // And it keeps producing parts after the burst.
    let after = fetch_media(&http, &url, "");
    let (m, p) = after.pl.next_part();
    let next = fetch_blocking(&http, &url, m, p);
    assert!(next.pl.last_part() >= Some((m, p)));
}

#[test]
fn operator_surfaces_are_on_the_admin_port_only_by_default() {
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let auth = format!("bearer {}", node.token);
    let with_token = [("authorization", auth.as_str())];
    for path in ["/metrics", "/api/v1/channels"] {
        let r = http
            .request("GET", &node.url(path), &with_token, None)
            .expect("HTTP");
        assert_eq!(r.status, 404, "player port {path}: {}", r.text());
    }
    assert_eq!(http.get(&node.url("/healthz")).status, 200);
    assert_eq!(http.get(&node.admin_url("/healthz")).status, 200);
    let r = http.get(&node.admin_url("/metrics"));
    assert_eq!(r.status, 200);
    assert!(r.text().contains("rungs_http_connections"), "{}", r.text());
    // The scheme is case-insensitive; the token is not.
    let r = http
        .request(
            "GET",
            &node.admin_url("/api/v1/channels"),
            &with_token,
            None,
        )
        .expect("HTTP");
    assert_eq!(r.status, 200, "{}", r.text());
    let wrong = format!("Bearer {}", node.token.to_uppercase());
    let r = http
        .request(
            "GET",
            &node.admin_url("/api/v1/channels"),
            &[("authorization", wrong.as_str())],
            None,
        )
        .expect("HTTP");
    assert_eq!(r.status, 401);
    // Bodies past the limit are refused before any handler reads them.
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(100 * 1024));
    let r = http
        .request(
            "POST",
            &node.admin_url("/api/v1/channels"),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            Some(big.as_bytes()),
        )
        .expect("HTTP");
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn admin_on_player_port_keeps_the_api_behind_its_token() {
    let node = Node::start(NodeConfig {
        http: HttpLimits {
            admin_on_player_port: true,
            ..HttpLimits::default()
        },
        ..NodeConfig::default()
    });
    let http = Http::new();
    assert_eq!(http.get(&node.url("/metrics")).status, 200);
    assert_eq!(http.get(&node.url("/api/v1/channels")).status, 401);
    let auth = format!("Bearer {}", node.token);
    let r = http
        .request(
            "GET",
            &node.url("/api/v1/channels"),
            &[("authorization", auth.as_str())],
            None,
        )
        .expect("HTTP");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(http.get(&node.admin_url("/metrics")).status, 200);
}
