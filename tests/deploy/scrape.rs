//! A real Prometheus (Debian's package) scrapes a live node and evaluates
//! `deploy/prometheus/rungs.rules.yml` on what it scraped:
//!
//! - `prometheus_scrapes_a_transcoding_node`: a node transcodes a published
//!   stream into the `standard` ladder; Prometheus, scraping the admin
//!   listener every second, sees `up == 1`, a per-rung gauge and counter of a
//!   transcoded rung, and the recording rules' per-rung series; every rule
//!   evaluates without error, and every query of the Grafana dashboard is
//!   one this Prometheus accepts.
//!
//! Every wait is bounded and says what it waited for when it runs out.

use super::common::prometheus::{
    PromServer, dashboard_queries, deploy_prometheus, sample_value, without_grafana_variables,
};
use super::common::*;
use std::time::{Duration, Instant};

/// A 640x360 source: the `standard` ladder's only rung below it is 160p.
const RUNG: &str = "160p";

/// Polls `query` every 250 ms until `accept` takes its result, or panics at
/// `deadline` with the last answer.
fn wait_query(
    prom: &PromServer,
    deadline: Instant,
    query: &str,
    what: &str,
    accept: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut last = Err("never asked".to_string());
    while Instant::now() < deadline {
        last = prom.query(query);
        if let Ok(r) = &last
            && accept(r)
        {
            return r.clone();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: `{query}` never gave what was wanted; last answer: {last:?}");
}

#[test]
fn prometheus_scrapes_a_transcoding_node() {
    let _turn = take_turn();
    let t0 = Instant::now();
    let node = Node::start(NodeConfig::default());
    let ch = node.create_channel_with_ladder("prometheus", "standard");
    // Cheap to encode (ultrafast, no B-frames) with a 1 s GOP: the rung's
    // per-GOP gauges appear a second after its first frame.
    let opts = PubOpts {
        gop: 30,
        bframes: false,
        zerolatency: true,
        preset: "ultrafast",
        max_seconds: 60,
        ..PubOpts::default()
    };
    let publisher = Publisher::start(&node.rtmp_url(&ch.stream_key), &opts, &node.data_dir);
    node.attach_log(&publisher.log_path);

    let prom = PromServer::start(
        &format!("127.0.0.1:{}", node.admin_port),
        &[deploy_prometheus("rungs.rules.yml")],
    );
    let deadline = t0 + Duration::from_secs(30);

    let up = wait_query(&prom, deadline, r#"up{job="rungs"}"#, "scrape", |r| {
        r.len() == 1 && sample_value(&r[0]) == 1.0
    });
    assert_eq!(
        up[0]["metric"]["instance"],
        format!("127.0.0.1:{}", node.admin_port)
    );

    // A transcoded rung's gauge and counter, as the node exports them.
    let sel = format!(r#"{{job="rungs", channel="{}", rung="{RUNG}"}}"#, ch.id);
    wait_query(
        &prom,
        deadline,
        &format!("rungs_rung_realtime_ratio{sel}"),
        "the rung's real-time ratio",
        |r| r.len() == 1 && sample_value(&r[0]) > 0.0,
    );
    let frames = wait_query(
        &prom,
        deadline,
        &format!("rungs_rung_frames_encoded_total{sel}"),
        "the rung's encoded frames",
        |r| r.len() == 1 && sample_value(&r[0]) > 0.0,
    );
    assert_eq!(frames[0]["metric"]["backend"], "x264", "a CPU-only node");

    // The recording rules evaluated on the scraped series. Only "frames
    // come out" is asserted: on a loaded machine the node may skip to
    // keyframes, so the rate itself says more about the machine than the rules.
    wait_query(
        &prom,
        deadline,
        &format!(
            r#"rungs:rung_output_fps:rate1m{{channel="{}", rung="{RUNG}"}}"#,
            ch.id
        ),
        "the recorded per-rung frame rate",
        |r| r.len() == 1 && sample_value(&r[0]) > 0.0,
    );

    // Every rule loaded, and none failed on real series.
    let groups = prom.rules();
    let rules: Vec<serde_json::Value> = groups
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(rules.len() > 20, "{} rules loaded", rules.len());
    for r in &rules {
        assert_ne!(
            r["health"], "err",
            "rule {} failed: {}",
            r["name"], r["lastError"]
        );
    }

    // Each dashboard query parses and runs here.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/rungs-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut failed = Vec::new();
    for (place, q) in dashboard_queries(&dash) {
        if let Err(e) = prom.query(&without_grafana_variables(&q)) {
            failed.push(format!("{place}: {e}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    eprintln!("done in {:?}", t0.elapsed());
}
