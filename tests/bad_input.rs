//! Bad publishers and bad bytes on the RTMP port are refused, counted and
//! logged (by reason, never with the key), while a live channel that is being
//! watched keeps producing parts without a gap.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Follows the live source playlist with blocking reloads and records any
/// break: a slow response, a gap in MSN/part numbering, a new discontinuity,
/// an error status.
fn watch(
    http: Http,
    url: String,
    stop: Arc<AtomicBool>,
    problems: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut parts_seen = 0usize;
        let mut cur = fetch_media(&http, &url, "");
        let mut last = cur.pl.last_part();
        let disc0 = cur.pl.discontinuity_tags;
        while !stop.load(Ordering::Relaxed) {
            let (m, p) = cur.pl.next_part();
            let t = Instant::now();
            let r = match http.try_get(&format!("{url}?_HLS_msn={m}&_HLS_part={p}")) {
                Ok(r) => r,
                Err(e) => {
                    problems.lock().unwrap().push(format!("watch: {e}"));
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            let el = t.elapsed();
            if r.status != 200 {
                problems
                    .lock()
                    .unwrap()
                    .push(format!("watch: status {} for part {m}.{p}", r.status));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            if el > Duration::from_secs(2) {
                problems
                    .lock()
                    .unwrap()
                    .push(format!("watch: part {m}.{p} took {el:?} (live stalled?)"));
            }
            let pl = match parse_media(&r.text()) {
                Ok(pl) => pl,
                Err(e) => {
                    problems
                        .lock()
                        .unwrap()
                        .push(format!("watch: invalid playlist: {e}"));
                    continue;
                }
            };
            if pl.discontinuity_tags > disc0 || pl.open_discontinuity {
                problems
                    .lock()
                    .unwrap()
                    .push(format!("watch: new EXT-X-DISCONTINUITY near part {m}.{p}"));
            }
            if pl.endlist {
                problems
                    .lock()
                    .unwrap()
                    .push("watch: EXT-X-ENDLIST on the live channel".into());
                break;
            }
            let parts: Vec<(u64, u64)> = pl.all_parts().iter().map(|(a, b, _)| (*a, *b)).collect();
            for w in parts.windows(2) {
                let (a, b) = (w[0], w[1]);
                if b != (a.0, a.1 + 1) && b != (a.0 + 1, 0) {
                    problems
                        .lock()
                        .unwrap()
                        .push(format!("watch: part numbering gap {a:?} -> {b:?}"));
                }
            }
            if let Some(l) = last {
                match parts.iter().position(|x| *x == l) {
                    Some(i) => parts_seen += parts.len() - i - 1,
                    None => problems
                        .lock()
                        .unwrap()
                        .push(format!("watch: previous last part {l:?} vanished")),
                }
            }
            last = pl.last_part();
            cur = Fetched { resp: r, pl };
        }
        parts_seen
    })
}

struct Case {
    name: &'static str,
    /// Words of which one should appear in the log lines about the refusal.
    words: &'static [&'static str],
}

fn rejected_by_reason(m: &Metrics) -> Vec<(String, f64)> {
    m.find("rungs_ingest_rejected_total", &[])
        .iter()
        .map(|s| (s.label("reason").unwrap_or_default().to_string(), s.value))
        .collect()
}

/// Connects, sends `bytes`, keeps the socket open and waits for the node to
/// close it. Returns how long that took, or None if it stayed open.
fn socket_closed_after(port: u16, bytes: &[u8], deadline: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the RTMP port");
    let t = Instant::now();
    if s.write_all(bytes).is_err() {
        return Some(t.elapsed());
    }
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 8192];
    while t.elapsed() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {} // S0/S1 and the like: keep reading
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(t.elapsed()), // reset
        }
    }
    None
}

#[test]
fn bad_publishers_are_refused_while_live_continues() {
    let f = Findings::default();
    let node = Node::start(NodeConfig::default());
    let http = Http::new();
    let ch = node.create_channel("live");
    let mut main_pub = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts::default(),
        &node.data_dir,
    );
    node.attach_log(&main_pub.log_path);
    let src = node.media_url(&ch.id, "source");
    wait_playlist(&http, &src, 1, Duration::from_secs(25))
        .unwrap_or_else(|| panic!("not live; ffmpeg:\n{}", main_pub.log()));

    let stop = Arc::new(AtomicBool::new(false));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let watcher = watch(Http::new(), src.clone(), stop.clone(), problems.clone());
    let started = Instant::now();

    let wrong_key = "wrongkey-0123456789abcdef";
    let cases = [
        Case {
            name: "wrong key",
            words: &["key", "unknown", "auth"],
        },
        Case {
            name: "no key",
            words: &["key", "stream name", "empty"],
        },
        Case {
            name: "second publisher",
            words: &["already", "busy", "second", "in use", "live"],
        },
        Case {
            name: "garbage bytes",
            words: &["handshake", "version", "invalid", "garbage", "protocol"],
        },
        Case {
            name: "truncated handshake",
            words: &[
                "handshake",
                "timeout",
                "timed out",
                "idle",
                "no publish within",
            ],
        },
        Case {
            name: "Sorenson video (-c:v flv)",
            words: &["codec", "unsupported", "h.264", "h264", "avc"],
        },
        Case {
            name: "MP3 audio (-c:a libmp3lame)",
            words: &["codec", "unsupported", "aac", "mp3"],
        },
    ];
    let mut reasons_seen = Vec::new();
    for case in &cases {
        let m0 = node.metrics();
        let before = m0.sum("rungs_ingest_rejected_total", &[]);
        let by0 = rejected_by_reason(&m0);
        let log0 = node.log().len();
        let t = Instant::now();
        let refused_in: Option<Duration> = match case.name {
            "wrong key"
            | "no key"
            | "second publisher"
            | "Sorenson video (-c:v flv)"
            | "MP3 audio (-c:a libmp3lame)" => {
                let (url, opts) = match case.name {
                    "wrong key" => (node.rtmp_url(wrong_key), PubOpts::default()),
                    "no key" => (
                        format!("rtmp://127.0.0.1:{}/live", node.rtmp_port),
                        PubOpts::default(),
                    ),
                    "second publisher" => (node.rtmp_url(&ch.stream_key), PubOpts::default()),
                    "Sorenson video (-c:v flv)" => (
                        node.rtmp_url(&ch.stream_key),
                        PubOpts {
                            video_codec: "flv",
                            ..Default::default()
                        },
                    ),
                    _ => (
                        node.rtmp_url(&ch.stream_key),
                        PubOpts {
                            audio_codec: "libmp3lame",
                            ..Default::default()
                        },
                    ),
                };
                // The codec cases use the live channel's key while it is live, so
                // they may also be refused as a second publisher: use a fresh
                // channel for them so that the codec is the reason.
                let (url, key, codec_ch) = if case.name.contains("codec")
                    || case.name.contains("Sorenson")
                    || case.name.contains("MP3")
                {
                    let c = node.create_channel(&format!("codec-{}", case.name.len()));
                    (node.rtmp_url(&c.stream_key), c.stream_key, Some(c.id))
                } else {
                    (url, String::new(), None)
                };
                let mut p = Publisher::start(&url, &opts, &node.data_dir);
                let st = p.wait_exit(Duration::from_secs(15));
                let el = t.elapsed();
                if let Some(id) = &codec_ch {
                    // A refused publish does not make the channel live.
                    let r = http.get(&node.master_url(id));
                    f.check(
                        r.status == 404,
                        "channel refused for its codec is not live (404)",
                        || format!("{}: GET master.m3u8 -> {}", case.name, r.status),
                    );
                    let live = node.metrics().sum("rungs_live_channels", &[]);
                    f.check(live == 1.0, "channel refused for its codec not counted in rungs_live_channels", || {
                        format!("{}: rungs_live_channels = {live} (only the watched channel is live)", case.name)
                    });
                }
                match st {
                    Some(s) => {
                        f.check(
                            !s.success(),
                            "refused publisher: ffmpeg exits nonzero",
                            || format!("{}: ffmpeg exited {s}\n{}", case.name, p.log()),
                        );
                        Some(el)
                    }
                    None => {
                        p.kill();
                        eprintln!("{} ffmpeg log:\n{}", case.name, p.log());
                        None
                    }
                }
                .inspect(|_| {
                    if !key.is_empty() {
                        f.check(
                            !node.log().contains(&key),
                            "node log never contains a stream key",
                            || case.name.into(),
                        );
                    }
                })
            }
            "garbage bytes" => {
                let mut g = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec();
                g.extend((0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
                socket_closed_after(node.rtmp_port, &g, Duration::from_secs(10))
            }
            _ => {
                // C0 + half of C1, then nothing.
                let mut h = vec![3u8];
                h.extend(std::iter::repeat_n(0x5au8, 768));
                socket_closed_after(node.rtmp_port, &h, Duration::from_secs(20))
            }
        };
        eprintln!("{}: refused after {refused_in:?}", case.name);
        f.check(
            refused_in.is_some(),
            "bad publish refused and connection closed within the deadline",
            || format!("{}: still connected at the deadline", case.name),
        );
        // Counted, with a reason.
        let counted = wait_for(Duration::from_secs(3), Duration::from_millis(100), || {
            let m = node.metrics();
            (m.sum("rungs_ingest_rejected_total", &[]) > before).then_some(m)
        });
        let new_reasons: Vec<String> = counted
            .as_ref()
            .map(|m| {
                rejected_by_reason(m)
                    .into_iter()
                    .filter(|(r, v)| by0.iter().find(|(a, _)| a == r).map_or(0.0, |x| x.1) < *v)
                    .map(|(r, _)| r)
                    .collect()
            })
            .unwrap_or_default();
        f.check(
            counted.is_some(),
            "rungs_ingest_rejected_total counts the refusal",
            || format!("{}: counter stayed at {before}", case.name),
        );
        if let Some(m) = &counted {
            let ok = m
                .find("rungs_ingest_rejected_total", &[("ingest", "rtmp")])
                .iter()
                .any(|s| s.value > 0.0);
            f.check(
                ok,
                "rungs_ingest_rejected_total has ingest=\"rtmp\"",
                || {
                    m.text
                        .lines()
                        .filter(|l| l.contains("rejected"))
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        // The log names the reason.
        let log = node.log();
        let new_log = log.get(log0..).unwrap_or("").to_ascii_lowercase();
        let names_reason = new_reasons.iter().any(|r| {
            new_log.contains(&r.to_ascii_lowercase()) || new_log.contains(&r.replace('_', " "))
        }) || case.words.iter().any(|w| new_log.contains(w));
        f.check(
            names_reason,
            "node log names the reason of a refusal",
            || {
                format!(
                    "{}: reasons {new_reasons:?}; new log lines:\n{}",
                    case.name,
                    new_log.lines().take(10).collect::<Vec<_>>().join("\n")
                )
            },
        );
        eprintln!("{}: reason label(s) {new_reasons:?}", case.name);
        reasons_seen.push((case.name, new_reasons));
        f.check(
            main_pub.try_status().is_none(),
            "the live publisher is not disturbed",
            || {
                format!(
                    "after {}: main ffmpeg exited {:?}",
                    case.name,
                    main_pub.try_status()
                )
            },
        );
    }

    // Keep watching a little after the last attempt.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let parts_seen = watcher.join().expect("watcher thread");
    let watched = started.elapsed().as_secs_f64();
    eprintln!("watched {watched:.1}s: {parts_seen} new parts; reasons {reasons_seen:?}");
    for p in problems.lock().unwrap().iter() {
        f.fail("live channel keeps going during bad publishes", p.clone());
    }
    // About 5 parts per second at PART-TARGET 0.2.
    f.check(
        parts_seen as f64 >= watched * 5.0 * 0.8,
        "parts keep coming at ~5/s on the live channel",
        || format!("{parts_seen} parts in {watched:.1}s"),
    );
    let log = node.log();
    f.check(
        !log.contains(&ch.stream_key),
        "node log never contains a stream key",
        || "live key in log".into(),
    );
    f.check(
        !log.contains(wrong_key),
        "node log never contains an attempted key",
        || "wrong key in log".into(),
    );
    f.check(
        main_pub.try_status().is_none(),
        "live publisher still running",
        || format!("{:?}", main_pub.try_status()),
    );
    f.assert_empty("bad_publishers_are_refused_while_live_continues");
}

/// A flood of connections stops at `ingest.max_connections`: the one past
/// the cap is closed at once and counted, the open ones are untouched, and a
/// freed slot is usable again.
#[test]
fn connections_past_the_cap_are_closed_and_counted() {
    let node = Node::start(NodeConfig {
        max_connections: 2,
        ..Default::default()
    });
    let port = node.rtmp_port;
    let refused = || {
        node.metrics().sum(
            "rungs_ingest_rejected_total",
            &[("reason", "too_many_connections")],
        )
    };
    let before = refused();
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    // Let the node accept both before the next one arrives.
    std::thread::sleep(Duration::from_millis(300));
    let closed = socket_closed_after(port, &[], Duration::from_secs(3));
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(1)),
        "the third connection must be closed at once: {closed:?}"
    );
    assert_eq!(refused() - before, 1.0, "one refusal counted");
    // The held connections are still open (the node waits for a handshake).
    for mut s in &held {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let r = s.read(&mut [0u8; 1]);
        assert!(
            r.as_ref().is_err_and(|e| matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )),
            "a held connection was closed: {r:?}"
        );
    }
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let again = socket_closed_after(port, &[], Duration::from_secs(1));
    assert!(again.is_none(), "a freed slot takes a new connection");
    assert_eq!(refused() - before, 1.0, "nothing more refused");
}
