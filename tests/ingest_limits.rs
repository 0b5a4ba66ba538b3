//! What the RTMP port holds an unauthenticated peer to: a small declared
//! message size before the publish (memory stays flat under many peers that
//! declare 16 MiB commands), a per-address connection limit, a deadline from
//! accept to an accepted publish, and a bounded number of log lines however
//! many connections are refused. Each refusal is counted by reason.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// RTMP message type of an AMF0 command (RTMP spec 7.1.1).
const AMF0_COMMAND: u8 = 20;

fn rejected(node: &Node, reason: &str) -> f64 {
    node.metrics().sum(
        "rungs_ingest_rejected_total",
        &[("ingest", "rtmp"), ("reason", reason)],
    )
}

/// Waits until the counter of `reason` reaches `want`; returns its last value.
fn wait_rejected(node: &Node, reason: &str, want: f64, within: Duration) -> f64 {
    let mut last = 0.0;
    wait_for(within, Duration::from_millis(100), || {
        last = rejected(node, reason);
        (last >= want).then_some(())
    });
    last
}

/// The node's process id, found by its data directory on its command line.
fn node_pid(node: &Node) -> u32 {
    let dir = node.data_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.contains(&b"serve".as_slice()) && args.contains(&dir.as_bytes())
            })
        })
        .expect("the node's process")
}

/// Connects from `source` (any 127/8 address works on Linux loopback), so
/// that each peer can be its own client address.
fn connect_from(source: Ipv4Addr, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let stream = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.bind((source, 0).into())?;
        s.connect((Ipv4Addr::LOCALHOST, port).into()).await
    });
    let stream = stream
        .and_then(|s| s.into_std())
        .unwrap_or_else(|e| panic!("connect from {source}: {e}"));
    stream.set_nonblocking(false).expect("blocking socket");
    stream
}

/// The plain (version 3, digest-less) RTMP handshake as a client: C0+C1,
/// S0+S1+S2 back, C2 = S1.
fn handshake(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend((0..1536u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8));
    // Bytes 4-7 zero: the original handshake, which the server echoes.
    c0c1[5..9].fill(0);
    s.write_all(&c0c1).expect("C0+C1");
    let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
    s.read_exact(&mut s0s1s2).expect("S0+S1+S2");
    s.write_all(&s0s1s2[1..1537]).expect("C2");
}

/// Reads until the node closes the connection (EOF or reset); how long
/// that took, or None when it stayed open for `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < within {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(t.elapsed()),
        }
    }
    None
}

/// A type 0 chunk header on chunk stream 3 declaring a 16 MiB - 1 AMF0
/// command, then `payload` bytes of it in 128-byte chunks (type 3 headers).
fn huge_command(payload: usize) -> Vec<u8> {
    let mut out = vec![0x03, 0, 0, 0, 0xff, 0xff, 0xff, AMF0_COMMAND, 0, 0, 0, 0];
    for i in 0..payload.div_ceil(128) {
        if i > 0 {
            out.push(0xc3);
        }
        out.extend(std::iter::repeat_n(0x02, 128.min(payload - i * 128)));
    }
    out
}

#[test]
fn peers_declaring_16_mib_commands_before_publishing_are_cut_and_memory_stays_flat() {
    const PEERS: u32 = 200;
    let node = Node::start(NodeConfig::default());
    let pid = node_pid(&node);
    let before = rejected(&node, "message_too_large");
    let rss0 = status_bytes(pid, "VmRSS");
    // The peak while the peers are on: sampled, since the node's start-up
    // peak (VmHWM) can hide growth below it.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(status_bytes(pid, "VmRSS"));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let attack = huge_command(1 << 20);
    // Every peer its own address, all connected at once: the per-address
    // limit plays no part, the message limit alone must hold memory down.
    let peers: Vec<std::thread::JoinHandle<Option<Duration>>> = (0..PEERS)
        .map(|i| {
            let attack = attack.clone();
            let port = node.rtmp_port;
            std::thread::spawn(move || {
                let source = Ipv4Addr::new(127, 0, 1 + (i / 200) as u8, 1 + (i % 200) as u8);
                let mut s = connect_from(source, port);
                handshake(&mut s);
                // The node closes the socket at the header: the rest of the
                // megabyte may meet a reset.
                let _ = s.write_all(&attack);
                closed_within(&mut s, Duration::from_secs(15))
            })
        })
        .collect();
    let cut: Vec<Option<Duration>> = peers
        .into_iter()
        .map(|p| p.join().expect("peer thread"))
        .collect();
    let open = cut.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of {PEERS} peers were not cut off");
    done.store(true, Ordering::Relaxed);
    let peak = sampler
        .join()
        .expect("sampler")
        .max(status_bytes(pid, "VmRSS"));
    eprintln!(
        "RSS {} MB, peak {} MB under the peers",
        rss0 >> 20,
        peak >> 20
    );
    // Before the limit, 200 such peers grew the node by 406 MB (each
    // megabyte buffered twice). Now each peer costs its read buffer and
    // handshake at most (64 KiB + a few KB) while it is open.
    let peak_growth = peak.saturating_sub(rss0);
    assert!(
        peak_growth < 48 << 20,
        "peak RSS grew by {} MB under {PEERS} peers",
        peak_growth >> 20
    );
    let counted = wait_rejected(
        &node,
        "message_too_large",
        before + f64::from(PEERS),
        Duration::from_secs(5),
    );
    assert_eq!(counted - before, f64::from(PEERS), "each cut counted once");
    let log = node.log();
    assert!(
        log.contains("declares a 16777215-byte message") && log.contains("chunk stream 3"),
        "the log names the limit and the chunk stream:\n{}",
        log.lines()
            .filter(|l| l.contains("rtmp:"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn connections_past_the_per_address_limit_are_refused_and_counted() {
    const LIMIT: usize = 16;
    const PAST: usize = 300;
    let node = Node::start(NodeConfig::default());
    let port = node.rtmp_port;
    let before = rejected(&node, "too_many_connections_per_address");
    let held: Vec<TcpStream> = (0..LIMIT)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    // The node accepts in order: the next connections come after these.
    let t = Instant::now();
    let mut still_open = 0;
    for _ in 0..PAST {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        if closed_within(&mut s, Duration::from_secs(2)).is_none() {
            still_open += 1;
        }
    }
    let took = t.elapsed();
    assert_eq!(still_open, 0, "connections past the limit left open");
    let counted = wait_rejected(
        &node,
        "too_many_connections_per_address",
        before + PAST as f64,
        Duration::from_secs(5),
    );
    assert_eq!(counted - before, PAST as f64, "every refusal counted");
    // Another address is not affected.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), port);
    assert!(
        closed_within(&mut other, Duration::from_millis(500)).is_none(),
        "a connection from another address is taken"
    );
    // The held connections were taken and are still open (they have until
    // the auth deadline, 10 s, to publish).
    assert!(took < Duration::from_secs(8), "refusals took {took:?}");
    for s in &held {
        let mut s = s.try_clone().expect("clone");
        assert!(
            closed_within(&mut s, Duration::from_millis(100)).is_none(),
            "a held connection was closed"
        );
    }
    drop(held);
    // Freed slots take new connections again.
    let retaken = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        closed_within(&mut s, Duration::from_millis(300))
            .is_none()
            .then_some(())
    });
    assert!(retaken.is_some(), "a freed slot is usable again");
    let log = node.log();
    assert!(
        log.contains("too many connections per address"),
        "the log names the limit"
    );
}

#[test]
fn five_thousand_refused_connections_write_a_bounded_log() {
    const CONNECTIONS: usize = 5000;
    const THREADS: usize = 4;
    let node = Node::start(NodeConfig::default());
    let port = node.rtmp_port;
    let sum = || {
        node.metrics()
            .sum("rungs_ingest_rejected_total", &[("ingest", "rtmp")])
    };
    let before = sum();
    let log0 = node.log().len();
    // Each sends a bad version byte: refused at the handshake, or at accept
    // when its address already has its limit of connections open.
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut open = 0;
                for _ in 0..CONNECTIONS / THREADS {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    let _ = s.write_all(&[0x07; 16]);
                    if closed_within(&mut s, Duration::from_secs(5)).is_none() {
                        open += 1;
                    }
                }
                open
            })
        })
        .collect();
    let open: usize = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    assert_eq!(open, 0, "bad connections left open");
    let counted = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let n = sum() - before;
        (n >= CONNECTIONS as f64).then_some(n)
    });
    assert!(
        counted.is_some(),
        "{} of {CONNECTIONS} refusals counted",
        sum() - before
    );
    let log = node.log();
    let lines: Vec<&str> = log[log0..]
        .lines()
        .filter(|l| l.contains("rtmp:"))
        .collect();
    eprintln!(
        "{} log lines for {CONNECTIONS} refused connections",
        lines.len()
    );
    assert!(!lines.is_empty(), "refusals are logged");
    assert!(
        lines.len() <= 150,
        "{} log lines for {CONNECTIONS} refused connections; first ones:\n{}",
        lines.len(),
        lines[..10].join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("held_back")),
        "the lines say how many were held back"
    );
}

#[test]
fn a_peer_that_never_publishes_is_closed_at_the_auth_deadline() {
    // ingest.auth_timeout_s, default 10 s.
    const DEADLINE: Duration = Duration::from_secs(10);
    let node = Node::start(NodeConfig::default());
    let port = node.rtmp_port;
    let before = rejected(&node, "no_publish_timeout");
    // One peer handshakes and goes quiet; another keeps sending small valid
    // messages (window acknowledgement size, type 5) but never publishes.
    let quiet = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let t = Instant::now();
        handshake(&mut s);
        closed_within(&mut s, DEADLINE * 2).map(|_| t.elapsed())
    });
    let busy = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let t = Instant::now();
        handshake(&mut s);
        let ack_size = [0x02, 0, 0, 0, 0, 0, 4, 5, 0, 0, 0, 0, 0, 0x26, 0x25, 0xa0];
        while t.elapsed() < DEADLINE * 2 {
            if s.write_all(&ack_size).is_err() {
                break;
            }
            if closed_within(&mut s, Duration::from_millis(300)).is_some() {
                return Some(t.elapsed());
            }
        }
        closed_within(&mut s, Duration::from_millis(100)).map(|_| t.elapsed())
    });
    for (name, peer) in [("quiet", quiet), ("busy", busy)] {
        let closed = peer.join().expect("peer");
        eprintln!("{name} peer closed after {closed:?}");
        let at = closed.unwrap_or_else(|| panic!("the {name} peer is still open"));
        assert!(
            at >= DEADLINE - Duration::from_millis(500) && at < DEADLINE + Duration::from_secs(3),
            "the {name} peer was closed after {at:?}, not at the deadline"
        );
    }
    let counted = wait_rejected(
        &node,
        "no_publish_timeout",
        before + 2.0,
        Duration::from_secs(5),
    );
    assert_eq!(counted - before, 2.0, "both counted as no_publish_timeout");
    assert!(
        node.log().contains("no publish within 10s"),
        "the log names the deadline"
    );
}
