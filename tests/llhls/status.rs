//! What the node says about channels outside their playlists: 404 for a
//! channel that is unknown or not live, and the /metrics it exports while
//! one is live, which must never contain a stream key.

use crate::common::*;

/// 404 for an unknown channel and for a channel (`idle`) that is not live.
pub fn check_not_live_404(f: &Findings, http: &Http, node: &Node, idle: &Channel) {
    for url in [
        node.master_url("no-such-channel"),
        node.media_url("no-such-channel", "source"),
        node.master_url(&idle.id),
        node.media_url(&idle.id, "source"),
        node.media_url(&idle.id, "audio"),
    ] {
        let r = http.get(&url);
        f.check(
            r.status == 404,
            "404 for unknown or not-live channel",
            || format!("GET {url}: {}", r.status),
        );
    }
}

/// /metrics with `ch` live: every metric exported, per-channel values
/// plausible, and no stream key.
pub fn check_metrics(f: &Findings, node: &Node, ch: &Channel) {
    let m = node.metrics();
    for name in [
        "rungs_ingest_bytes_total",
        "rungs_ingest_frames_total",
        "rungs_ingest_keyframe_interval_seconds",
        "rungs_live_channels",
        "rungs_parts_published_total",
        "rungs_hls_blocked_requests",
        "rungs_ingest_to_part_seconds",
    ] {
        f.check(m.has(name), "metric exported", || {
            format!("{name} missing from /metrics")
        });
    }
    let c = [("channel", ch.id.as_str())];
    for name in [
        "rungs_ingest_bytes_total",
        "rungs_ingest_frames_total",
        "rungs_parts_published_total",
        "rungs_ingest_to_part_seconds_count",
    ] {
        let v = m.sum(name, &c);
        f.check(
            v > 0.0,
            "per-channel metric nonzero for the live channel",
            || format!("{name}{{channel={}}} = {v}", ch.id),
        );
    }
    let ki = m.sum("rungs_ingest_keyframe_interval_seconds", &c);
    f.check(
        (ki - 2.0).abs() < 0.1,
        "keyframe interval metric = 2 s for -g 60 at 30 fps",
        || format!("{ki}"),
    );
    let live = m.sum("rungs_live_channels", &[]);
    f.check(live == 1.0, "rungs_live_channels = 1", || format!("{live}"));
    let n = m.sum("rungs_ingest_to_part_seconds_count", &c);
    let avg = m.sum("rungs_ingest_to_part_seconds_sum", &c) / n.max(1.0);
    eprintln!("rungs_ingest_to_part_seconds: count {n}, mean {avg:.3}s");
    f.check(
        avg < 1.0,
        "mean ingest-to-part latency < 1 s with 200 ms parts",
        || format!("{avg:.3}s"),
    );
    f.check(
        !m.text.contains(&ch.stream_key),
        "metrics never contain a stream key",
        || "stream key in /metrics".into(),
    );
}
