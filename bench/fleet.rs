//! What a fleet costs its PostgreSQL registry, and what the redirect costs a
//! player. Two release nodes on one PostgreSQL server the benchmark starts.
//!
//! `cargo bench --bench fleet`:
//! 1. **Idle**: no channel, a window of W seconds: queries per second per
//!    node, from each node's `rungs_registry_queries_total` (by operation)
//!    and from PostgreSQL's own count of transactions in the database.
//! 2. **Live**: N passthrough channels published to node B, each asked for
//!    by a player that goes through node A every 500 ms and follows the
//!    redirect each time (the worst case: hls.js follows it once and stays
//!    on B); the queries per second above idle, per live channel, on the
//!    holding node, on the redirecting node, and in PostgreSQL.
//! 3. **Redirect**: hls.js time to first frame through A (307 to B) against
//!    straight to B, alternating, R rounds each; medians and their ratio.
//!
//! Env: RUNGS_BENCH_SECONDS (window, default 30), RUNGS_BENCH_CHANNELS (N,
//! default 4), RUNGS_BENCH_ROUNDS (R, default 5).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/env.rs"]
mod env;
#[path = "common/release.rs"]
mod release;

use common::*;
use env::env_parse;
use release::release_binary;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Registry queries a node counted so far, by operation.
fn queries(node: &Node) -> BTreeMap<String, f64> {
    let mut by_op = BTreeMap::new();
    for s in node.metrics().find("rungs_registry_queries_total", &[]) {
        let op = s.label("op").unwrap_or_default().to_string();
        *by_op.entry(op).or_insert(0.0) += s.value;
    }
    by_op
}

/// Transactions PostgreSQL committed or rolled back in `db` so far.
fn pg_transactions(client: &mut ::postgres::Client, db: &str) -> f64 {
    // Statistics are flushed by each backend at most once a second.
    let row = client
        .query_one(
            "SELECT (xact_commit + xact_rollback)::float8 FROM pg_stat_database WHERE datname = $1",
            &[&db],
        )
        .expect("pg_stat_database");
    row.get(0)
}

struct Window {
    a: BTreeMap<String, f64>,
    b: BTreeMap<String, f64>,
    pg: f64,
    at: Instant,
}

fn snapshot(a: &Node, b: &Node, pg: &mut ::postgres::Client, db: &str) -> Window {
    Window {
        a: queries(a),
        b: queries(b),
        pg: pg_transactions(pg, db),
        at: Instant::now(),
    }
}

/// Per-second rates between two snapshots: node A by op, node B by op, PG.
fn rates(from: &Window, to: &Window) -> (BTreeMap<String, f64>, BTreeMap<String, f64>, f64) {
    let secs = to.at.duration_since(from.at).as_secs_f64();
    let diff = |x: &BTreeMap<String, f64>, y: &BTreeMap<String, f64>| {
        y.iter()
            .map(|(k, v)| (k.clone(), (v - x.get(k).copied().unwrap_or(0.0)) / secs))
            .filter(|(_, r)| *r > 0.0)
            .collect::<BTreeMap<_, _>>()
    };
    (
        diff(&from.a, &to.a),
        diff(&from.b, &to.b),
        (to.pg - from.pg) / secs,
    )
}

fn total(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}

fn show(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    require_browser();
    let window = Duration::from_secs(env_parse("RUNGS_BENCH_SECONDS").unwrap_or(30));
    let channels: usize = env_parse("RUNGS_BENCH_CHANNELS").unwrap_or(4);
    let rounds: usize = env_parse("RUNGS_BENCH_ROUNDS").unwrap_or(5);
    let bin = release_binary();
    let pg = PgServer::start();
    let db_name = "fleet_bench";
    let db = pg.create_database(db_name);
    let mut stats = pg.client(db_name);
    let tmp = tempfile::tempdir().expect("tempdir");
    let start = |id: &str| {
        let toml = format!("[registry]\nurl = \"{db}\"\n\n[node]\nid = \"{id}\"\n");
        let cfg = NodeConfig {
            extra_toml: Box::leak(toml.into_boxed_str()),
            ..NodeConfig::default()
        };
        Node::start_in(&tmp.path().join(id), cfg, &bin)
    };
    let a = start("a");
    let b = start("b");
    println!(
        "fleet: 2 release nodes on PostgreSQL, default lease (15 s) and heartbeat (5 s), {}-s windows",
        window.as_secs()
    );

    // 1. Idle.
    std::thread::sleep(Duration::from_secs(2));
    let w0 = snapshot(&a, &b, &mut stats, db_name);
    std::thread::sleep(window);
    let w1 = snapshot(&a, &b, &mut stats, db_name);
    let (idle_a, idle_b, idle_pg) = rates(&w0, &w1);
    println!(
        "idle: node A {:.2} queries/s ({}), node B {:.2} queries/s ({}); PostgreSQL {:.2} transactions/s in the database",
        total(&idle_a),
        show(&idle_a),
        total(&idle_b),
        show(&idle_b),
        idle_pg
    );

    // 2. Live: N channels on B, each asked for through A by a naive player.
    let mut publishers = Vec::new();
    let mut ids = Vec::new();
    for i in 0..channels {
        let body = format!(r#"{{"name":"bench{i}","ladder":"passthrough"}}"#);
        let r = a.api("POST", "/api/v1/channels", Some(body.as_bytes()));
        assert_eq!(r.status, 201, "create: {}", r.text());
        let ch = Channel::from_json(r.json());
        let opts = PubOpts {
            width: 320,
            height: 180,
            preset: "ultrafast",
            video_bitrate_k: 300,
            ..PubOpts::default()
        };
        publishers.push(Publisher::start(
            &b.rtmp_url(&ch.stream_key),
            &opts,
            &b.data_dir,
        ));
        ids.push(ch.id);
    }
    for id in &ids {
        wait_playlist(
            &b.http,
            &b.media_url(id, "source"),
            1,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("channel {id} not live on B"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let players: Vec<_> = ids
        .iter()
        .map(|id| {
            let url = a.media_url(id, "source");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let http = Http::new();
                let mut served = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if http.try_get(&url).is_ok_and(|r| r.status == 200) {
                        served += 1;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                served
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let l0 = snapshot(&a, &b, &mut stats, db_name);
    std::thread::sleep(window);
    let l1 = snapshot(&a, &b, &mut stats, db_name);
    stop.store(true, Ordering::Relaxed);
    let served: u64 = players.into_iter().map(|p| p.join().unwrap_or(0)).sum();
    let (live_a, live_b, live_pg) = rates(&l0, &l1);
    let n = channels as f64;
    println!(
        "live, {channels} channels on B, each polled through A every 500 ms ({served} playlists served via 307):"
    );
    println!(
        "  holding node B: {:.2} queries/s ({}); {:.3} per live channel above idle",
        total(&live_b),
        show(&live_b),
        (total(&live_b) - total(&idle_b)) / n
    );
    println!(
        "  redirecting node A: {:.2} queries/s ({}); {:.3} per channel asked for above idle",
        total(&live_a),
        show(&live_a),
        (total(&live_a) - total(&idle_a)) / n
    );
    println!(
        "  PostgreSQL: {live_pg:.2} transactions/s; {:.3} per live channel above idle",
        (live_pg - idle_pg) / n
    );

    // 3. Time to first frame through the redirect and straight.
    let id = &ids[0];
    let (mut via_a, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (url, out) in [
            (a.master_url(id), &mut via_a),
            (b.master_url(id), &mut direct),
        ] {
            let rep = play_hlsjs(&url, 4, None, 0);
            if let Some(ms) = rep["report"]["firstFrameMs"].as_f64() {
                out.push(ms);
            }
        }
    }
    assert!(
        !via_a.is_empty() && !direct.is_empty(),
        "hls.js reported no first frame"
    );
    let (ma, mb) = (median(via_a.clone()), median(direct.clone()));
    println!(
        "hls.js time to first frame, median of {rounds}: through A (307 to B) {ma:.0} ms, straight to B {mb:.0} ms: {:.2}x, +{:.0} ms (through A {via_a:.0?}, straight {direct:.0?})",
        ma / mb,
        ma - mb
    );
    drop(publishers);
}
