//! The HTTP side of a node on the open internet, on a release build with a
//! live transcoded channel (640x360 source, the standard ladder).
//!
//! `cargo bench --bench http_load`:
//!
//! (a) idle connections: the node's RSS and the channel's dropped GOPs over
//!     a quiet window, then with 10,000 idle TCP connections open on the
//!     player port and 1,000 junk connections on the RTMP port for the same
//!     window (goal: no GOP dropped).
//! (b) blocking reload fan-out: 10,000 keep-alive connections each park a
//!     blocking reload for a part about a second ahead; when the part is
//!     published, all are answered. Printed: first-to-last answer spread
//!     (goal < 100 ms; the first answer stands for the publication), and
//!     the node's CPU per answer against a reference measured in the same
//!     run: the same 10,000 connections each fetching the playlist plainly.
//!
//! Env: RUNGS_BENCH_CONNECTIONS (default 10000), RUNGS_BENCH_SECONDS (quiet
//! and loaded windows of (a), default 20), RUNGS_BENCH_ROUNDS ((b), default 5).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/release.rs"]
mod release;

use common::*;
use release::release_binary;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Junk connections opened on the RTMP port beside the idle HTTP ones.
const RTMP_JUNK: usize = 1_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let conns = env("RUNGS_BENCH_CONNECTIONS", 10_000) as usize;
    let window = Duration::from_secs(env("RUNGS_BENCH_SECONDS", 20));
    let rounds = env("RUNGS_BENCH_ROUNDS", 5);
    raise_open_files(conns as u64 + 1_000);
    let bin = release_binary();
    let tmp = tempfile::Builder::new()
        .prefix("rungs-bench-")
        .tempdir()
        .expect("temp dir");
    let node = Node::start_in(
        tmp.path(),
        NodeConfig {
            http: HttpLimits {
                // Idle sockets that never send a byte stay for the bench.
                header_timeout_s: 600.0,
                idle_timeout_s: 600.0,
                max_connections: conns + 2_000,
                max_blocked_requests: conns + 2_000,
                admin_on_player_port: false,
            },
            ..NodeConfig::default()
        },
        &bin,
    );
    let pid = node.pid().expect("node running");
    let ch = node.create_channel_with_ladder("http-load", "standard");
    let publisher = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts {
            max_seconds: 900,
            ..PubOpts::default()
        },
        tmp.path(),
    );
    node.attach_log(&publisher.log_path);
    let http = Http::new();
    let url = node.media_url(&ch.id, "source");
    wait_playlist(&http, &url, 2, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no live playlist; ffmpeg log:\n{}", publisher.log()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let c = [("channel", ch.id.as_str())];
    let dropped = || node.metrics().sum("rungs_rung_dropped_gops_total", &c);
    println!(
        "rungs http_load bench: release node, 640x360 source, standard ladder, {conns} connections"
    );

    // (a) Idle connections.
    std::thread::sleep(Duration::from_secs(5));
    let gops0 = dropped();
    std::thread::sleep(window);
    let (rss_quiet, gops_quiet) = (status_bytes(pid, "VmRSS"), dropped());
    let port = node.http_port;
    let opening = Instant::now();
    let idle: Vec<TcpStream> = rt.block_on(async {
        let mut v = Vec::with_capacity(conns);
        for _ in 0..conns {
            v.push(
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect"),
            );
        }
        v
    });
    let opened_in = opening.elapsed();
    // And junk on the RTMP port: a C0 byte, then bytes no handshake has.
    let rtmp_port = node.rtmp_port;
    let junk: Vec<TcpStream> = rt.block_on(async {
        let mut v = Vec::with_capacity(RTMP_JUNK);
        for i in 0..RTMP_JUNK {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", rtmp_port)).await {
                let mut bytes = vec![3u8];
                bytes.extend((0..700).map(|k| (k * 31 + i) as u8));
                let _ = s.write_all(&bytes).await;
                v.push(s);
            }
        }
        v
    });
    let rtmp_refused = node
        .metrics()
        .sum("rungs_ingest_rejected_total", &[("ingest", "rtmp")]);
    let player_connections = || {
        node.metrics()
            .sum("rungs_http_connections", &[("listener", "player")])
    };
    let open_now = wait_for(Duration::from_secs(60), Duration::from_millis(200), || {
        let n = player_connections();
        (n >= conns as f64).then_some(n)
    })
    .expect("the node holds every idle connection");
    let gops_loaded0 = dropped();
    std::thread::sleep(window);
    let (rss_loaded, gops_loaded) = (status_bytes(pid, "VmRSS"), dropped());
    let t = Instant::now();
    let pl = http.get(&url);
    let playlist_in = t.elapsed();
    assert_eq!(pl.status, 200);
    println!(
        "(a) {conns} idle connections (opened in {opened_in:.2?}, node counts {open_now}): RSS {} MB quiet -> {} MB loaded (+{:.1} KB per connection); dropped GOPs {} over {window:?} quiet, {} over {window:?} loaded (goal 0); a playlist GET meanwhile took {playlist_in:.2?}",
        rss_quiet / 1_000_000,
        rss_loaded / 1_000_000,
        (rss_loaded as f64 - rss_quiet as f64) / conns as f64 / 1000.0,
        gops_quiet - gops0,
        gops_loaded - gops_loaded0,
    );
    println!(
        "    with {} junk RTMP connections from one address at the same time ({rtmp_refused} refused, the rest cut at the handshake or the auth deadline)",
        junk.len()
    );
    drop(junk);
    drop(idle);
    wait_for(Duration::from_secs(60), Duration::from_millis(200), || {
        (player_connections() < 10.0).then_some(())
    })
    .expect("the node let go of the idle connections");

    // (b) Blocking reload fan-out over keep-alive connections.
    let path = format!("/hls/{}/source/index.m3u8", ch.id);
    let mut socks: Vec<TcpStream> = rt.block_on(async {
        let mut v = Vec::with_capacity(conns);
        for _ in 0..conns {
            v.push(
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect"),
            );
        }
        v
    });
    let gops_b0 = dropped();
    // Reference: every connection fetches the playlist once, plainly.
    let cpu0 = cpu_seconds(pid);
    let (back, _, plain_ok) = rt.block_on(round(socks, path.clone()));
    socks = back;
    let plain_cpu = cpu_seconds(pid) - cpu0;
    assert_eq!(plain_ok, conns, "plain fetches answered 200");
    let mut spreads = Vec::new();
    let mut cpu_per = Vec::new();
    for r in 0..rounds {
        let now = fetch_media(&http, &url, "");
        let (m, p) = now.pl.next_part();
        // About a second ahead: every request is parked before it exists.
        let ahead = format!("{path}?_HLS_msn={m}&_HLS_part={}", p + 5);
        let cpu0 = cpu_seconds(pid);
        let (back, times, ok) = rt.block_on(round(socks, ahead));
        socks = back;
        let cpu = cpu_seconds(pid) - cpu0;
        let first = times.iter().min().copied().expect("answers");
        let last = times.iter().max().copied().expect("answers");
        let spread = last - first;
        let mut from_first: Vec<f64> = times
            .iter()
            .map(|t| (*t - first).as_secs_f64() * 1000.0)
            .collect();
        from_first.sort_by(f64::total_cmp);
        println!(
            "(b) round {r}: {ok}/{conns} answered 200; from the first answer (the part's publication): p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms (goal < 100 ms); node CPU {:.1} us per answer",
            quantile(&from_first, 0.5),
            quantile(&from_first, 0.99),
            spread.as_secs_f64() * 1000.0,
            cpu / conns as f64 * 1e6,
        );
        spreads.push(spread.as_secs_f64() * 1000.0);
        cpu_per.push(cpu / conns as f64);
    }
    spreads.sort_by(f64::total_cmp);
    cpu_per.sort_by(f64::total_cmp);
    let plain_per = plain_cpu / conns as f64;
    println!(
        "(b) {rounds} rounds: median first-to-last {:.1} ms; node CPU per parked answer {:.1} us median, per plain playlist answer {:.1} us (reference, same run): ratio {:.2}; dropped GOPs during (b): {}",
        quantile(&spreads, 0.5),
        quantile(&cpu_per, 0.5) * 1e6,
        plain_per * 1e6,
        quantile(&cpu_per, 0.5) / plain_per,
        dropped() - gops_b0,
    );
}

/// Every connection sends `GET path` (accepting gzip, as players do) and
/// reads its answer; returns the connections, each answer's arrival and
/// how many were 200.
async fn round(socks: Vec<TcpStream>, path: String) -> (Vec<TcpStream>, Vec<Instant>, usize) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: node\r\nAccept-Encoding: gzip\r\n\r\n");
    let mut set = JoinSet::new();
    for mut s in socks {
        let req = req.clone();
        set.spawn(async move {
            let status = match s.write_all(req.as_bytes()).await {
                Ok(()) => read_status(&mut s).await,
                Err(_) => 0,
            };
            (s, Instant::now(), status)
        });
    }
    let mut back = Vec::new();
    let mut times = Vec::new();
    let mut ok = 0;
    while let Some(done) = set.join_next().await {
        let (s, at, status) = done.expect("task");
        back.push(s);
        times.push(at);
        ok += usize::from(status == 200);
    }
    (back, times, ok)
}

/// Reads one response (head and Content-Length body); its status, 0 if cut.
async fn read_status(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut have = buf.len() - end - 4;
            while have < len {
                match s.read(&mut chunk).await {
                    Ok(n) if n > 0 => have += n,
                    _ => return 0,
                }
            }
            return status;
        }
        match s.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return 0,
        }
    }
}
