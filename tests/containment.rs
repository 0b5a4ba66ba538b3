//! What keeps one publisher, one channel or one locked file from taking
//! more than its share, end to end with real publishers:
//!
//! - `rtmp_rotate_key_and_delete_cut_the_live_publisher`: rotating a key
//!   through the API cuts the ffmpeg publisher within a second, the old key
//!   is refused and the new one goes live; deleting a channel from the CLI
//!   (behind the node's back) cuts its publisher within a second too.
//! - `rtmp_publisher_over_the_bitrate_cap_is_cut`: a publisher above
//!   `ingest.limits.max_bitrate_kbps` is cut with reason `bitrate`, and a
//!   publisher within it on the same node streams on.
//! - `a_locked_registry_stalls_no_hls_response`: another process holds the
//!   channel database's write lock for 4 s while six API writes wait on it;
//!   playlist requests keep answering at once.
//! - `secrets_stay_private`: the first start's output holds no admin token;
//!   the data dir is 0700, the token and the database 0600.
//!
//! A panic inside a channel is contained as `src/hub/tests.rs` shows (a
//! fault hook in the channel thread); WHIP's cut is in `tests/whip.rs`.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn publishers(node: &Node) -> f64 {
    node.metrics()
        .sum("rungs_publishers", &[("ingest", "rtmp")])
}

fn cut(node: &Node, reason: &str) -> f64 {
    node.metrics()
        .sum("rungs_ingest_cut_total", &[("reason", reason)])
}

/// Waits for the channel's source playlist to list a part.
fn live(node: &Node, id: &str) {
    let url = node.media_url(id, "source");
    wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        let r = node.http.try_get(&url).ok()?;
        (r.status == 200 && r.text().contains("#EXT-X-PART:")).then_some(())
    })
    .unwrap_or_else(|| panic!("{url} listed no part within 30 s\n{}", node.log()));
}

fn publish(node: &Node, key: &str, o: &PubOpts) -> Publisher {
    Publisher::start(&node.rtmp_url(key), o, &node.data_dir)
}

#[test]
fn rtmp_rotate_key_and_delete_cut_the_live_publisher() {
    let _turn = take_turn();
    let f = Findings::default();
    let node = Node::start(NodeConfig::default());
    let a = node.create_channel("rotated");
    let b = node.create_channel("deleted");
    let opts = PubOpts {
        preset: "ultrafast",
        ..Default::default()
    };
    let mut pa = publish(&node, &a.stream_key, &opts);
    let mut pb = publish(&node, &b.stream_key, &opts);
    live(&node, &a.id);
    live(&node, &b.id);
    assert_eq!(publishers(&node), 2.0);

    let rotated = node.rotate_key(&a.id);
    f.check_within(
        "rotate-key (API) cuts the publisher",
        time_until(Duration::from_secs(5), || publishers(&node) == 1.0),
        Duration::from_secs(1),
        || node.log(),
    );
    f.check(
        pa.wait_exit(Duration::from_secs(10)).is_some(),
        "ffmpeg saw its connection closed and exited",
        || pa.log(),
    );
    f.check(
        cut(&node, "key_rotated") == 1.0,
        "rungs_ingest_cut_total{reason=\"key_rotated\"} counts it",
        || format!("{}", cut(&node, "key_rotated")),
    );

    // The old key is refused; the new one takes the stream back.
    let mut old = publish(&node, &a.stream_key, &opts);
    f.check(
        old.wait_exit(Duration::from_secs(15))
            .is_some_and(|s| !s.success()),
        "the old key is refused",
        || old.log(),
    );
    let mut again = publish(&node, &rotated.stream_key, &opts);
    f.check(
        time_until(Duration::from_secs(20), || publishers(&node) == 2.0).is_some(),
        "the new key publishes",
        || again.log(),
    );

    // Behind the node's back: the CLI writes the database directly.
    node.cli(&["channel", "delete", &b.id]);
    f.check_within(
        "channel delete (CLI) cuts the publisher",
        time_until(Duration::from_secs(5), || publishers(&node) == 1.0),
        Duration::from_secs(1),
        || node.log(),
    );
    f.check(
        cut(&node, "channel_deleted") == 1.0,
        "rungs_ingest_cut_total{reason=\"channel_deleted\"} counts it",
        || node.log(),
    );
    pb.stop();
    again.stop();
    f.assert_empty("rtmp_rotate_key_and_delete_cut_the_live_publisher");
}

#[test]
fn rtmp_publisher_over_the_bitrate_cap_is_cut() {
    let _turn = take_turn();
    let f = Findings::default();
    let node = Node::start(NodeConfig {
        extra_toml: "[ingest.limits]\nmax_bitrate_kbps = 1500\n",
        ..Default::default()
    });
    let within = node.create_channel("within");
    let over = node.create_channel("over");
    let base = PubOpts {
        preset: "ultrafast",
        vbv: true,
        ..Default::default()
    };
    let mut ok = publish(
        &node,
        &within.stream_key,
        &PubOpts {
            video_bitrate_k: 600,
            ..base.clone()
        },
    );
    let mut big = publish(
        &node,
        &over.stream_key,
        &PubOpts {
            video_bitrate_k: 4000,
            ..base
        },
    );
    live(&node, &within.id);
    match time_until(Duration::from_secs(20), || cut(&node, "bitrate") >= 1.0) {
        Some(d) => eprintln!("4 Mb/s publisher cut {d:?} after the other went live"),
        None => f.fail("the publisher over the cap is cut", node.log()),
    }
    f.check(
        big.wait_exit(Duration::from_secs(10)).is_some(),
        "its ffmpeg saw the connection closed",
        || big.log(),
    );
    f.check(
        node.log().contains("reason=\"bitrate\"") || node.log().contains("reason=bitrate"),
        "the node says why in its log",
        || node.log(),
    );
    // The publisher within the cap is untouched.
    std::thread::sleep(Duration::from_secs(2));
    f.check(
        ok.running() && publishers(&node) == 1.0,
        "the publisher within the cap streams on",
        || ok.log(),
    );
    ok.stop();
    f.assert_empty("rtmp_publisher_over_the_bitrate_cap_is_cut");
}

/// Holds the database's write lock for `secs` (in WAL mode, what an
/// exclusive transaction takes: every other writer waits), printing
/// `locked` once it holds it.
fn lock_database(db: &std::path::Path, secs: f64) -> std::process::Child {
    let script = format!(
        "import sqlite3, sys, time\n\
         c = sqlite3.connect({db:?}, isolation_level=None)\n\
         c.execute('BEGIN EXCLUSIVE')\n\
         c.execute('CREATE TABLE IF NOT EXISTS lock_probe (x)')\n\
         print('locked', flush=True)\n\
         time.sleep({secs})\n\
         c.execute('ROLLBACK')\n\
         c.close()\n",
        db = db.display().to_string(),
    );
    Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

#[test]
fn a_locked_registry_stalls_no_hls_response() {
    use std::io::BufRead;
    let _turn = take_turn();
    let f = Findings::default();
    let node = Node::start(NodeConfig::default());
    let ch = node.create_channel("locked");
    let mut p = publish(
        &node,
        &ch.stream_key,
        &PubOpts {
            preset: "ultrafast",
            ..Default::default()
        },
    );
    live(&node, &ch.id);
    // The multivariant playlist waits for the first whole segment: have it.
    assert_eq!(node.http.get(&node.master_url(&ch.id)).status, 200);

    let mut locker = lock_database(&node.data_dir.join("channels.sqlite3"), 4.0);
    let mut line = String::new();
    let stdout = locker.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("locker output");
    assert_eq!(line.trim(), "locked");
    let locked_at = Instant::now();
    // API writes that wait on the lock, more than the node has async workers.
    let waiting: Vec<_> = (0..6)
        .map(|i| {
            let url = node.admin_url("/api/v1/channels");
            let auth = format!("Bearer {}", node.token);
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let body = format!(r#"{{"name": "made-while-locked-{i}"}}"#);
                let r = Http::with_timeout(Duration::from_secs(20)).request(
                    "POST",
                    &url,
                    &[
                        ("Authorization", &auth),
                        ("Content-Type", "application/json"),
                    ],
                    Some(body.as_bytes()),
                );
                (r.map(|r| r.status), t0.elapsed())
            })
        })
        .collect();
    // Meanwhile players' requests: playlists (blocking reloads) and parts.
    let src = node.media_url(&ch.id, "source");
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    while locked_at.elapsed() < Duration::from_millis(3500) {
        let t0 = Instant::now();
        let r = node.http.get(&node.master_url(&ch.id));
        let master = t0.elapsed();
        let t0 = Instant::now();
        let pl = node.http.get(&src);
        let media = t0.elapsed();
        f.check(r.status == 200 && pl.status == 200, "HLS answers", || {
            format!("{} {}", r.status, pl.status)
        });
        if master.max(media) > Duration::from_millis(300) {
            eprintln!(
                "slow at {:?} after the lock: master {master:?}, media {media:?}",
                locked_at.elapsed()
            );
        }
        slowest = slowest.max(master).max(media);
        answered += 2;
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{answered} HLS requests during the lock, slowest {slowest:?}");
    f.check(
        slowest < Duration::from_millis(500),
        "no HLS response waits on the lock (slowest < 500 ms)",
        || format!("{slowest:?}"),
    );
    for w in waiting {
        let (status, took) = w.join().expect("api thread");
        f.check(
            status.as_ref().is_ok_and(|s| *s == 201) && took >= Duration::from_secs(3),
            "API writes wait for the lock, then succeed",
            || format!("{status:?} after {took:?}"),
        );
    }
    let _ = locker.wait();
    p.stop();
    f.assert_empty("a_locked_registry_stalls_no_hls_response");
}

#[test]
fn secrets_stay_private() {
    let f = Findings::default();
    let dir = tempfile::Builder::new()
        .prefix("rungs-e2e-")
        .tempdir()
        .expect("tempdir");
    let data = dir.path().join("data");
    let node = Node::start_in(&data, NodeConfig::default(), &node_bin());
    let token = node.token.clone();
    f.check(token.len() >= 16, "a token was made", || token.clone());
    let log = node.log();
    f.check(
        !log.contains(&token),
        "the first start's output holds no admin token",
        || log.clone(),
    );
    f.check(
        log.contains("admin-token"),
        "it says where the token is",
        || log.clone(),
    );
    let ch = node.create_channel("secret");
    let listed = node.cli(&["channel", "list"]);
    f.check(
        !node.log().contains(&ch.stream_key),
        "no stream key in the node's log",
        || listed,
    );
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    for (path, want) in [
        (data.clone(), 0o700),
        (data.join("admin-token"), 0o600),
        (data.join("channels.sqlite3"), 0o600),
    ] {
        let got = mode(&path);
        f.check(got == want, "mode of the node's private files", || {
            format!("{}: {got:o}, want {want:o}", path.display())
        });
    }
    f.assert_empty("secrets_stay_private");
}
