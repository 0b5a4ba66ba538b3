//! The registry on both of its databases: one suite, run once on SQLite (a file in a
//! temporary data dir) and once on PostgreSQL (a real server, `common::PgServer`), so
//! that the two backends are held to the same behaviour call for call.
//!
//! - `sqlite_registry_passes_the_shared_suite`, `postgres_registry_passes_the_shared_suite`:
//!   nodes opening one empty database at once; channels (create, get, list, rotate,
//!   private, delete, find by key); policies; playback keys and revocations; the access
//!   generation moved by every such change and by nothing else; stream
//!   sessions, each closed at start only by the node that opened it; the recordings
//!   index; migrations run again over their own result; the live map (claims taken,
//!   refused and taken over after a lease expires, release, leave, node fields, a
//!   deleted channel's mark) and two handles racing claims from two threads, exactly
//!   one winning each channel; the per-call metrics.
//! - `postgres_restarted_mid_way_is_reconnected_to`: the server restarts under an open
//!   registry, then stops and comes back: calls fail only while it is down; a column
//!   changed under a prepared statement does not fail the next call.
//! - `postgres_errors_never_show_the_password`: a wrong password, an unreachable server
//!   and the config as served name the database without its password.
//! - `postgres_calls_on_async_threads_do_not_panic`: the blocking client called from a
//!   multi-threaded runtime's `block_on` and from a current-thread runtime's task.
//!
//! Leases: a claim is refused within milliseconds of a heartbeat with a lease of
//! seconds, and an expiry is waited for at more than twice the lease, so a slow machine
//! changes nothing.

mod common;

use common::PgServer;
use rungs::metrics::METRICS;
use rungs::registry::{
    LiveNode, NODE_RESTARTED, NodeInfo, Policy, RecordingRow, RecordingState, Registry,
    RegistryConfig, RegistryError, SCHEMA_VERSION,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// One database, as the suite reaches it.
struct Target {
    /// The `[registry]` config naming it (empty URL: SQLite in `data_dir`).
    cfg: RegistryConfig,
    data_dir: PathBuf,
    /// Runs SQL on the database behind the registry's back.
    raw: Box<dyn Fn(&str)>,
}

impl Target {
    fn open(&self, node: &str) -> Registry {
        Registry::open_config(&self.cfg, &self.data_dir, node)
            .unwrap_or_else(|e| panic!("open the registry for node {node:?}: {e}"))
    }
}

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.to_string(),
        public_url: format!("https://{id}.example.com"),
        region: "eu-west".into(),
        capacity: 12,
        draining: false,
    }
}

const LONG_LEASE: Duration = Duration::from_secs(60);

fn suite(t: &Target) {
    let started = Instant::now();
    concurrent_opens(t);
    channels(t);
    policies_keys_and_revocations(t);
    access_generation_moves_with_every_access_change(t);
    sessions_close_per_node(t);
    recordings_index(t);
    migrations_run_again(t);
    live_map(t);
    racing_claims(t);
    metrics_count_calls();
    eprintln!("suite took {:.1} s", started.elapsed().as_secs_f64());
}

/// Nodes starting together on an empty database all open it, at the newest schema.
fn concurrent_opens(t: &Target) {
    let barrier = Barrier::new(4);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let barrier = &barrier;
                let (cfg, dir) = (t.cfg.clone(), t.data_dir.clone());
                s.spawn(move || {
                    barrier.wait();
                    Registry::open_config(&cfg, &dir, &format!("opener-{i}"))
                        .map(|r| r.schema_version().expect("schema version"))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("opener thread"), Ok(SCHEMA_VERSION));
        }
    });
}

fn channels(t: &Target) {
    let reg = t.open("edge-a");
    let cli = t.open("");
    let a = reg.create("alpha", "standard").expect("create");
    let b = cli
        .create_with(" beta ", "passthrough", true)
        .expect("create");
    assert_eq!(
        (b.name.as_str(), b.ladder.as_str(), b.private),
        ("beta", "passthrough", true)
    );
    assert_ne!(a.id, b.id);
    assert!(a.stream_key.len() >= 3 + 32, "a key has at least 128 bits");
    // Another handle (the CLI, another node) sees a channel at once.
    assert_eq!(reg.get(&b.id).expect("get"), b);
    assert_eq!(
        cli.find_by_key(&a.stream_key).expect("find"),
        Some(a.clone())
    );
    assert_eq!(reg.find_by_key("sk_nope").expect("find"), None);
    assert_eq!(reg.find_by_key("").expect("find"), None);
    let listed: Vec<String> = reg
        .list()
        .expect("list")
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(listed.contains(&a.id) && listed.contains(&b.id));

    let rotated = reg.rotate_key(&a.id).expect("rotate");
    assert_ne!(rotated.stream_key, a.stream_key);
    assert_eq!(rotated.id, a.id);
    assert_eq!(reg.find_by_key(&a.stream_key).expect("find"), None);
    assert_eq!(
        reg.find_by_key(&rotated.stream_key).expect("find"),
        Some(rotated.clone())
    );

    assert!(reg.set_private(&a.id, true).expect("private").private);
    let private = reg.private_channels().expect("private channels");
    assert!(private.contains(&a.id) && private.contains(&b.id));
    assert!(!reg.set_private(&a.id, false).expect("public").private);
    assert!(
        !reg.private_channels()
            .expect("private channels")
            .contains(&a.id)
    );

    reg.delete(&a.id).expect("delete");
    assert!(matches!(reg.get(&a.id), Err(RegistryError::NotFound(_))));
    assert!(matches!(reg.delete(&a.id), Err(RegistryError::NotFound(_))));
    assert!(matches!(
        reg.rotate_key(&a.id),
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        reg.set_private(&a.id, true),
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        reg.create("  ", "standard"),
        Err(RegistryError::InvalidName(_))
    ));
    assert!(matches!(
        reg.create("a\nb", "standard"),
        Err(RegistryError::InvalidName(_))
    ));
}

fn policies_keys_and_revocations(t: &Target) {
    let reg = t.open("edge-a");
    let ch = reg.create("with rules", "standard").expect("create");
    assert_eq!(reg.policy(&ch.id).expect("policy"), Policy::default());
    let p = Policy {
        allowed_origins: vec!["https://example.com".into()],
        deny_countries: vec!["FR".into()],
        max_height: Some(720),
        record: Some(true),
        ..Policy::default()
    };
    reg.set_policy(&ch.id, &p).expect("set policy");
    let other = t.open("edge-b");
    assert_eq!(other.policy(&ch.id).expect("policy"), p);
    assert!(
        other
            .policies()
            .expect("policies")
            .contains(&(ch.id.clone(), p))
    );
    assert!(matches!(
        reg.set_policy("nope", &Policy::default()),
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        reg.policy("nope"),
        Err(RegistryError::NotFound(_))
    ));

    let k1 = reg.add_playback_key("PEM one").expect("key");
    let k2 = reg.add_playback_key("PEM two").expect("key");
    let keys = other.playback_keys().expect("keys");
    assert!(keys.contains(&k1) && keys.contains(&k2));
    reg.delete_playback_key(&k1.id).expect("delete key");
    assert!(!other.playback_keys().expect("keys").contains(&k1));
    assert!(matches!(
        reg.delete_playback_key(&k1.id),
        Err(RegistryError::KeyNotFound(_))
    ));

    assert!(matches!(
        reg.revoke_viewer(&"v".repeat(41)),
        Err(RegistryError::InvalidViewer(_))
    ));
    let r1 = reg.revoke_viewer("viewer-1").expect("revoke");
    reg.revoke_viewer("viewer-1").expect("revoke again");
    reg.revoke_viewer("viewer-2").expect("revoke");
    let revs = other.revocations().expect("revocations");
    assert_eq!(revs.iter().filter(|r| r.viewer_id == "viewer-1").count(), 1);
    assert!(
        revs.iter()
            .any(|r| r.viewer_id == "viewer-1" && r.revoked_at >= r1.revoked_at)
    );
    assert!(revs.iter().any(|r| r.viewer_id == "viewer-2"));
}

/// Every write that changes who may play or which hooks run moves the
/// generation another node sees (the triggers of schema version 3); reads,
/// sessions and the live map do not. `read_if_changed` reads only then.
fn access_generation_moves_with_every_access_change(t: &Target) {
    let (reg, other) = (t.open("edge-a"), t.open("edge-b"));
    let generation = || other.access_generation().expect("access generation");
    let mut seen = generation();
    let mut moved = |what: &str, change: &dyn Fn()| {
        change();
        let now = generation();
        assert!(now != seen, "{what} did not move the access generation");
        seen = now;
    };
    let ch = reg.create("gen", "standard").expect("create");
    moved("create", &|| {
        reg.create("gen 2", "standard").expect("create");
    });
    moved("rotate", &|| {
        reg.rotate_key(&ch.id).expect("rotate");
    });
    moved("private", &|| {
        reg.set_private(&ch.id, true).expect("private");
    });
    moved("policy", &|| {
        let p = Policy {
            max_height: Some(480),
            ..Policy::default()
        };
        reg.set_policy(&ch.id, &p).expect("policy");
    });
    let key = std::cell::RefCell::new(None);
    moved("add key", &|| {
        *key.borrow_mut() = Some(reg.add_playback_key("PEM gen").expect("key"));
    });
    moved("delete key", &|| {
        let id = key.borrow().as_ref().expect("added").id.clone();
        reg.delete_playback_key(&id).expect("delete key");
    });
    moved("revoke", &|| {
        reg.revoke_viewer("viewer-gen").expect("revoke");
    });
    moved("delete", &|| {
        reg.delete(&ch.id).expect("delete");
    });

    let quiet = generation();
    reg.list().expect("list");
    reg.policies().expect("policies");
    other
        .heartbeat(&node("edge-b"), LONG_LEASE)
        .expect("heartbeat");
    assert_eq!(generation(), quiet, "reads and heartbeats leave it");

    let reads = std::cell::Cell::new(0);
    let read = || {
        reads.set(reads.get() + 1);
        true
    };
    let seen = other.read_if_changed(None, read);
    assert_eq!((seen, reads.get()), (Some(quiet), 1), "first call reads");
    assert_eq!(other.read_if_changed(seen, read), seen);
    assert_eq!(reads.get(), 1, "nothing changed: no read");
    reg.revoke_viewer("viewer-gen-2").expect("revoke");
    let after = other.read_if_changed(seen, read);
    assert_eq!(reads.get(), 2, "a change: read again");
    assert!(after != seen);
    assert_eq!(other.read_if_changed(after, || false), after);
    reg.revoke_viewer("viewer-gen-3").expect("revoke");
    assert_eq!(
        other.read_if_changed(after, || false),
        None,
        "a failed read is retried"
    );
}

/// Each node closes, at its start, only the sessions it left open itself.
fn sessions_close_per_node(t: &Target) {
    let a = t.open("edge-a");
    let b = t.open("edge-b");
    let ch = a.create("sessions", "passthrough").expect("create");
    let on_a = a.open_session(&ch.id, "rtmp", 1_000).expect("open on a");
    a.set_session_ingest(on_a, &serde_json::json!({"video": {"width": 640}}))
        .expect("ingest");
    assert!(
        a.add_session_event(on_a, 2_000, "publisher left", "gone")
            .expect("event")
    );
    assert!(
        a.add_session_event(on_a, 2_000, "publisher reconnected", "rtmp")
            .expect("event")
    );
    a.count_dropped_events(on_a, 2).expect("count");
    let on_b = b.open_session(&ch.id, "whip", 3_000).expect("open on b");
    assert_eq!(
        a.session_node(on_a).expect("node").as_deref(),
        Some("edge-a")
    );
    assert_eq!(
        a.session_node(on_b).expect("node").as_deref(),
        Some("edge-b")
    );
    assert_eq!(a.session_node(-1).expect("node"), None);

    // edge-a restarts: its session ends, edge-b's stream goes on.
    let a = t.open("edge-a");
    assert_eq!(a.close_interrupted_sessions(9_000).expect("close"), 1);
    let list = a.sessions(&ch.id, 10).expect("sessions");
    let by_id = |id| list.iter().find(|s| s.id == id).expect("listed");
    assert_eq!(by_id(on_a).end_reason.as_deref(), Some(NODE_RESTARTED));
    assert_eq!(by_id(on_a).ended_at_ms, Some(9_000));
    assert_eq!(
        by_id(on_a).ingest,
        Some(serde_json::json!({"video": {"width": 640}}))
    );
    assert_eq!(by_id(on_a).events_dropped, 2);
    let kinds: Vec<&str> = by_id(on_a).events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["publisher left", "publisher reconnected"],
        "in the order written"
    );
    assert_eq!(
        by_id(on_b).ended_at_ms,
        None,
        "edge-b's session is live there"
    );
    assert_eq!(a.close_interrupted_sessions(9_500).expect("close again"), 0);

    b.close_session(on_b, 5_000, "publisher did not come back")
        .expect("close");
    b.close_session(on_b, 6_000, "later").expect("close again");
    let last = a.last_session(&ch.id).expect("last").expect("some");
    assert_eq!((last.id, last.protocol.as_str()), (on_b, "whip"));
    assert_eq!(
        last.end_reason.as_deref(),
        Some("publisher did not come back")
    );
    assert_eq!(last.ended_at_ms, Some(5_000));
    assert_eq!(a.last_session("nope").expect("last"), None);
}

fn recordings_index(t: &Target) {
    let reg = t.open("edge-a");
    let mut row = RecordingRow {
        channel_id: "rec-ch".into(),
        session: "20261207T180000Z".into(),
        started_at: "2026-12-07T18:00:00.000Z".into(),
        ended_at: None,
        duration_s: None,
        bytes: None,
        recovered: false,
        state: RecordingState::Recording,
    };
    reg.put_recording(&row).expect("put");
    let later = RecordingRow {
        session: "20261207T190000Z".into(),
        ..row.clone()
    };
    reg.put_recording(&later).expect("put");
    row.ended_at = Some("2026-12-07T18:10:00.000Z".into());
    row.duration_s = Some(600.5);
    row.bytes = Some(1234);
    row.recovered = true;
    row.state = RecordingState::Uploading;
    reg.put_recording(&row).expect("put");
    reg.set_recording_state("rec-ch", &row.session, RecordingState::Complete)
        .expect("state");
    // A late index of the same end does not take it back to uploading.
    reg.put_recording(&row).expect("put");
    let listed = t.open("edge-b").recordings("rec-ch").expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], later, "newest first");
    assert_eq!(
        listed[1],
        RecordingRow {
            state: RecordingState::Complete,
            ..row
        }
    );
    assert!(reg.recordings("other").expect("list").is_empty());
}

/// A database whose version rows are lost runs every step again over its own result.
fn migrations_run_again(t: &Target) {
    let reg = t.open("edge-a");
    let before = reg.list().expect("list");
    (t.raw)("DELETE FROM schema_version");
    assert_eq!(reg.schema_version().expect("version"), 0);
    let again = t.open("edge-a");
    assert_eq!(again.schema_version().expect("version"), SCHEMA_VERSION);
    assert_eq!(again.list().expect("list"), before);
    // And a plain reopen finds nothing to do.
    assert_eq!(
        t.open("edge-a").schema_version().expect("version"),
        SCHEMA_VERSION
    );
}

fn live(reg: &Registry) -> Vec<LiveNode> {
    reg.nodes().expect("nodes")
}

fn live_ids(reg: &Registry) -> Vec<String> {
    live(reg).into_iter().map(|n| n.info.id).collect()
}

fn live_map(t: &Target) {
    let reg_a = t.open("map-a");
    let reg_b = t.open("map-b");
    let (a, b) = (node("map-a"), node("map-b"));
    reg_a.heartbeat(&a, LONG_LEASE).expect("heartbeat a");
    reg_b.heartbeat(&b, LONG_LEASE).expect("heartbeat b");
    let nodes = live(&reg_a);
    let got_a = nodes
        .iter()
        .find(|n| n.info.id == "map-a")
        .expect("a is live");
    assert_eq!(got_a.info, a, "every field round-trips");
    assert_eq!(got_a.live_channels, 0);
    assert!(
        got_a.expires_in_ms > 50_000 && got_a.expires_in_ms <= 60_000,
        "lease left: {} ms",
        got_a.expires_in_ms
    );

    // Claims: free, ours again, someone else's.
    assert_eq!(reg_a.claim_live("ch-1", "map-a").expect("claim"), None);
    assert_eq!(
        reg_a.claim_live("ch-1", "map-a").expect("claim again"),
        None
    );
    assert_eq!(
        reg_b.claim_live("ch-1", "map-b").expect("claim"),
        Some(a.clone())
    );
    assert_eq!(reg_b.live_holder("ch-1").expect("holder"), Some(a.clone()));
    assert_eq!(reg_b.live_holder("ch-none").expect("holder"), None);
    let count = |id: &str| {
        live(&reg_a)
            .into_iter()
            .find(|n| n.info.id == id)
            .map(|n| n.live_channels)
    };
    assert_eq!(count("map-a"), Some(1));
    assert!(
        reg_a.heartbeat(&node(""), LONG_LEASE).is_err(),
        "a node needs an id"
    );
    // A node with no lease may not claim.
    let err = reg_a.claim_live("ch-1", "map-ghost").expect_err("no lease");
    assert!(err.to_string().contains("no current lease"), "{err}");

    // Only the holder's release counts.
    reg_b.release_live("ch-1", "map-b").expect("release by b");
    assert_eq!(reg_b.live_holder("ch-1").expect("holder"), Some(a.clone()));
    reg_a.release_live("ch-1", "map-a").expect("release by a");
    assert_eq!(reg_b.live_holder("ch-1").expect("holder"), None);
    assert_eq!(reg_b.claim_live("ch-1", "map-b").expect("claim"), None);

    // The fields a heartbeat carries are updated by the next one.
    let b_draining = NodeInfo {
        draining: true,
        capacity: 3,
        region: "us-east".into(),
        ..b.clone()
    };
    reg_b.heartbeat(&b_draining, LONG_LEASE).expect("heartbeat");
    assert_eq!(
        reg_a.live_holder("ch-1").expect("holder"),
        Some(b_draining.clone())
    );

    // A clean exit takes the node and its channels out of the map.
    reg_b.leave("map-b").expect("leave");
    assert!(!live_ids(&reg_a).contains(&"map-b".to_string()));
    assert_eq!(reg_a.live_holder("ch-1").expect("holder"), None);
    assert_eq!(reg_a.claim_live("ch-1", "map-a").expect("claim"), None);

    // Deleting a channel removes its mark.
    let ch = reg_a.create("live here", "standard").expect("create");
    assert_eq!(reg_a.claim_live(&ch.id, "map-a").expect("claim"), None);
    reg_a.delete(&ch.id).expect("delete");
    assert_eq!(reg_a.live_holder(&ch.id).expect("holder"), None);

    // A node that stops beating loses its channels when its lease expires, by the
    // database's clock.
    let short = Duration::from_secs(1);
    let c = node("map-c");
    let reg_c = t.open("map-c");
    reg_c.heartbeat(&c, short).expect("heartbeat c");
    assert_eq!(reg_c.claim_live("ch-2", "map-c").expect("claim"), None);
    assert_eq!(
        reg_a.claim_live("ch-2", "map-a").expect("claim"),
        Some(c.clone())
    );
    assert!(live_ids(&reg_a).contains(&"map-c".to_string()));
    std::thread::sleep(short * 2 + Duration::from_millis(500));
    assert!(
        !live_ids(&reg_a).contains(&"map-c".to_string()),
        "c's lease expired"
    );
    assert_eq!(reg_a.live_holder("ch-2").expect("holder"), None);
    assert_eq!(reg_a.claim_live("ch-2", "map-a").expect("take over"), None);
    let err = reg_c
        .claim_live("ch-3", "map-c")
        .expect_err("c has no lease");
    assert!(err.to_string().contains("no current lease"), "{err}");
    // Back with a heartbeat, c finds ch-2 taken.
    reg_c.heartbeat(&c, LONG_LEASE).expect("heartbeat c");
    assert_eq!(
        reg_c.claim_live("ch-2", "map-c").expect("claim"),
        Some(a.clone())
    );
    reg_c.leave("map-c").expect("leave");
    reg_a.leave("map-a").expect("leave");
    assert!(live(&reg_a).iter().all(|n| !n.info.id.starts_with("map-")));
}

/// Two nodes on two handles claim the same channels at the same moments: each channel
/// goes to exactly one of them, and the other is told which.
fn racing_claims(t: &Target) {
    const CHANNELS: usize = 40;
    let nodes = [node("race-1"), node("race-2")];
    let regs: Vec<Arc<Registry>> = nodes
        .iter()
        .map(|n| {
            let reg = Arc::new(t.open(&n.id));
            reg.heartbeat(n, LONG_LEASE).expect("heartbeat");
            reg
        })
        .collect();
    let barrier = Arc::new(Barrier::new(2));
    let results: Vec<Vec<Option<NodeInfo>>> = std::thread::scope(|s| {
        let handles: Vec<_> = regs
            .iter()
            .zip(&nodes)
            .map(|(reg, me)| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..CHANNELS {
                        // Meet before each claim, so that every claim is a race.
                        barrier.wait();
                        out.push(
                            reg.claim_live(&format!("race-ch-{i}"), &me.id)
                                .expect("claim"),
                        );
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("claimer"))
            .collect()
    });
    for (i, (one, two)) in results[0].iter().zip(&results[1]).enumerate() {
        let holder = regs[0]
            .live_holder(&format!("race-ch-{i}"))
            .expect("holder")
            .expect("held");
        match (one, two) {
            (None, Some(h)) => assert_eq!((h, &holder), (&nodes[0], &nodes[0])),
            (Some(h), None) => assert_eq!((h, &holder), (&nodes[1], &nodes[1])),
            other => panic!("channel {i}: both or neither won: {other:?}"),
        }
    }
    for (reg, n) in regs.iter().zip(&nodes) {
        reg.leave(&n.id).expect("leave");
    }
}

/// Every call counted once per method.
fn metrics_count_calls() {
    let text = METRICS.render();
    for op in [
        "heartbeat",
        "claim_live",
        "get",
        "find_by_key",
        "open_session",
    ] {
        assert!(
            text.contains(&format!("rungs_registry_queries_total{{op=\"{op}\"}}")),
            "no count of {op}"
        );
    }
    // The claim without a lease above was a refused call.
    assert!(text.contains("rungs_registry_errors_total{op=\"claim_live\"}"));
}

#[test]
fn sqlite_registry_passes_the_shared_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("channels.sqlite3");
    let t = Target {
        cfg: RegistryConfig::default(),
        data_dir: dir.path().to_path_buf(),
        raw: Box::new(move |sql: &str| {
            rusqlite::Connection::open(&file)
                .and_then(|c| c.execute_batch(sql))
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }),
    };
    suite(&t);
}

fn postgres_target(server: &PgServer, database: &str) -> Target {
    let url = server.create_database(database);
    let raw_url = url.clone();
    Target {
        cfg: RegistryConfig { url },
        // Not used by PostgreSQL; a path nothing may write to shows it.
        data_dir: PathBuf::from("/nonexistent/rungs-data"),
        raw: Box::new(move |sql: &str| {
            postgres::Client::connect(&raw_url, postgres::NoTls)
                .and_then(|mut c| c.batch_execute(sql))
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }),
    }
}

#[test]
fn postgres_registry_passes_the_shared_suite() {
    let server = PgServer::start();
    let t = postgres_target(&server, "suite");
    suite(&t);
}

#[test]
fn postgres_restarted_mid_way_is_reconnected_to() {
    let server = PgServer::start();
    let t = postgres_target(&server, "restart");
    let reg = t.open("edge-a");
    let ch = reg.create("survives", "standard").expect("create");
    reg.heartbeat(&node("edge-a"), LONG_LEASE)
        .expect("heartbeat");

    // An operator's restart: the registry's connection is cut, the next calls (a read,
    // a write, a transaction) go through on a new one.
    server.restart();
    let failed_gets = || METRICS.registry_errors.with_label_values(&["get"]).get();
    let failed_before = failed_gets();
    assert_eq!(reg.get(&ch.id).expect("read after restart"), ch);
    assert_eq!(
        failed_gets(),
        failed_before,
        "the lost connection was replaced within the call"
    );
    let other = reg
        .create("after restart", "standard")
        .expect("write after restart");
    assert_eq!(
        reg.claim_live(&other.id, "edge-a")
            .expect("claim after restart"),
        None
    );

    // Down for a while: calls fail, naming the call and not the password...
    server.stop();
    let err = reg.get(&ch.id).expect_err("server down");
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("registry get on postgres://rungs:<redacted>@127.0.0.1"),
        "{text}"
    );
    assert!(!text.contains(server.password()), "{text}");
    // ...and work again once it is back, without reopening.
    server.start_again();
    assert_eq!(reg.get(&ch.id).expect("read once back"), ch);
    assert_eq!(
        reg.live_holder(&other.id).expect("holder"),
        Some(node("edge-a"))
    );

    // A newer node's migration changes a column under a statement this connection
    // prepared: the statement is prepared again.
    (t.raw)("ALTER TABLE fleet_nodes ALTER COLUMN region TYPE VARCHAR(200)");
    assert_eq!(
        reg.live_holder(&other.id).expect("holder after ALTER"),
        Some(node("edge-a"))
    );
}

#[test]
fn postgres_errors_never_show_the_password() {
    let server = PgServer::start();
    let url = server.create_database("secrets");
    let wrong = url.replace(server.password(), "not-the-pw-4417");
    let err = Registry::open_config(
        &RegistryConfig { url: wrong },
        Path::new("/nonexistent"),
        "n",
    )
    .map(drop)
    .expect_err("wrong password");
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("registry open on postgres://rungs:<redacted>@"),
        "{text}"
    );
    assert!(
        text.contains("28P01"),
        "the server's refusal is named: {text}"
    );
    assert!(
        !text.contains("not-the-pw-4417") && !text.contains(server.password()),
        "{text}"
    );

    // Nothing listens on this port: refused at once, well within the connect timeout.
    let closed = format!(
        "postgres://rungs:{}@127.0.0.1:{}/secrets",
        server.password(),
        common::free_port()
    );
    let started = Instant::now();
    let err = Registry::open_config(
        &RegistryConfig {
            url: closed.clone(),
        },
        Path::new("/x"),
        "n",
    )
    .map(drop)
    .expect_err("no server");
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = format!("{err} {err:?}");
    assert!(!text.contains(server.password()), "{text}");
    assert!(text.contains("<redacted>"), "{text}");

    // Not a URL the registry takes.
    let err = Registry::open_config(
        &RegistryConfig {
            url: format!("mysql://rungs:{}@db/rungs", server.password()),
        },
        Path::new("/x"),
        "n",
    )
    .map(drop)
    .expect_err("mysql");
    assert!(!err.to_string().contains(server.password()), "{err}");

    // The config as served shows where, not the password.
    let shown = serde_json::to_string(&RegistryConfig { url: closed }).expect("serialize");
    assert!(
        shown.contains("postgres://rungs:<redacted>@127.0.0.1:"),
        "{shown}"
    );
    assert!(!shown.contains(server.password()), "{shown}");
}

#[test]
fn postgres_calls_on_async_threads_do_not_panic() {
    let server = PgServer::start();
    let t = postgres_target(&server, "async");
    let reg = Arc::new(t.open("edge-a"));
    let ch = reg.create("async", "standard").expect("create");
    // As the node builds its routers: inside the multi-threaded runtime's block_on.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let r = reg.clone();
    let got = multi.block_on(async move {
        let on_worker = tokio::spawn({
            let r = r.clone();
            let id = ch.id.clone();
            async move { r.get(&id).map_err(|e| e.to_string()) }
        })
        .await
        .expect("task");
        (r.get(&ch.id).map_err(|e| e.to_string()), on_worker)
    });
    assert!(got.0.is_ok() && got.1.is_ok(), "{got:?}");
    // As a #[tokio::test] would: a current-thread runtime.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let listed = single.block_on(async { reg.list().map(|l| l.len()) });
    assert_eq!(listed.expect("list"), 1);
}
