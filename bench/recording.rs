//! What recording costs a live node, measured on a release node against a
//! real S3 API server (s3s-fs on loopback).
//!
//! `cargo bench --bench recording`:
//! 1. **Part latency, recording on vs off, same run**: two channels on one
//!    node (standard ladder, live-paced 720p30 publishers), one recorded and
//!    one not, for two rounds with the roles swapped (so neither channel's
//!    position decides). From the node's `rungs_ingest_to_part_seconds`
//!    over each round (after a warm-up): the mean and p95 per rendition
//!    group (source, transcoded, audio), recorded over unrecorded.
//! 2. **Upload throughput**: the store stopped while both channels record
//!    (the spool fills), then started again: the backlog's bytes over the
//!    time the uploader takes to empty the spool, and that as a multiple of
//!    the rate the recordings are made at.
//! 3. **Disk and CPU per recorded channel-hour**: the recording's bytes per
//!    media hour; CPU from the node's threads (/proc): the recorded channel's
//!    thread over the unrecorded one's, the thumbnailer, and the uploader's
//!    share of the async threads while it drains the backlog.
//!
//! Env: RUNGS_BENCH_SECONDS (measured seconds per round, default 40),
//! RUNGS_BENCH_WARMUP (default 8), RUNGS_BENCH_BACKLOG (seconds recorded
//! while the store is down, default 30).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/env.rs"]
mod env;
#[path = "common/release.rs"]
mod release;

use common::*;
use env::env_parse;
use release::release_binary;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// CPU seconds of the node's threads whose name starts with each prefix.
fn thread_cpu(pid: u32) -> HashMap<String, f64> {
    let tick = 100.0; // USER_HZ on Linux
    let mut out: HashMap<String, f64> = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // "tid (comm) state ... utime stime": comm may hold spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let (Some(u), Some(s)) = (rest.get(11), rest.get(12)) else {
            continue;
        };
        let secs = (u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)) / tick;
        *out.entry(comm).or_default() += secs;
    }
    out
}

fn cpu_of(map: &HashMap<String, f64>, prefix: &str) -> f64 {
    map.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// The histogram's buckets (le, cumulative count), sum and count for a
/// channel's renditions in `group`.
#[derive(Clone, Default)]
struct Hist {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

const LATENCY: &str = "rungs_ingest_to_part_seconds";

fn group_of(rendition: &str) -> &'static str {
    match rendition {
        "source" => "source",
        "audio" => "audio",
        _ => "transcoded",
    }
}

fn hist(m: &Metrics, channel: &str, group: &str) -> Hist {
    let mut h = Hist::default();
    let in_group = |s: &Sample| {
        s.labels
            .iter()
            .any(|(k, v)| k == "rendition" && group_of(v) == group)
    };
    for s in m.find(&format!("{LATENCY}_bucket"), &[("channel", channel)]) {
        if !in_group(s) {
            continue;
        }
        let Some(le) = s.label("le") else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        match h.buckets.iter_mut().find(|(b, _)| *b == le) {
            Some(b) => b.1 += s.value,
            None => h.buckets.push((le, s.value)),
        }
    }
    h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    for s in m.find(&format!("{LATENCY}_sum"), &[("channel", channel)]) {
        if in_group(s) {
            h.sum += s.value;
        }
    }
    for s in m.find(&format!("{LATENCY}_count"), &[("channel", channel)]) {
        if in_group(s) {
            h.count += s.value;
        }
    }
    h
}

impl Hist {
    fn minus(&self, before: &Hist) -> Hist {
        Hist {
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| {
                    let b = before
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |x| x.1);
                    (*le, c - b)
                })
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    fn add(&mut self, o: &Hist) {
        if self.buckets.is_empty() {
            self.buckets = o.buckets.iter().map(|(le, _)| (*le, 0.0)).collect();
        }
        for (le, c) in &o.buckets {
            if let Some(b) = self.buckets.iter_mut().find(|(l, _)| l == le) {
                b.1 += c;
            }
        }
        self.sum += o.sum;
        self.count += o.count;
    }

    fn mean(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            f64::NAN
        }
    }

    /// Linear within the bucket, as Prometheus' histogram_quantile.
    fn quantile(&self, q: f64) -> f64 {
        let total = self.buckets.last().map_or(0.0, |b| b.1);
        if total <= 0.0 {
            return f64::NAN;
        }
        let rank = q * total;
        let (mut prev_le, mut prev_c) = (0.0, 0.0);
        for &(le, c) in &self.buckets {
            if c >= rank {
                if le.is_infinite() {
                    return prev_le;
                }
                return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c).max(1e-9);
            }
            (prev_le, prev_c) = (le, c);
        }
        prev_le
    }
}

fn set_record(node: &Node, id: &str, on: bool) {
    let body = format!("{{\"record\": {on}}}");
    let r = node.api(
        "PATCH",
        &format!("/api/v1/channels/{id}"),
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "PATCH record: {}", r.text());
}

fn publish(node: &Node, ch: &Channel, dir: &std::path::Path, secs: u64) -> Publisher {
    let opts = PubOpts {
        width: 1280,
        height: 720,
        video_bitrate_k: 2500,
        bframes: false,
        // The publishers' own encoding must leave the cores to the node.
        preset: "ultrafast",
        max_seconds: secs as u32 + 30,
        ..Default::default()
    };
    let p = Publisher::start(&node.rtmp_url(&ch.stream_key), &opts, dir);
    node.attach_log(&p.log_path);
    p
}

fn recordings(node: &Node, id: &str) -> Vec<serde_json::Value> {
    node.api("GET", &format!("/api/v1/channels/{id}/recordings"), None)
        .json()["recordings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = env_parse("RUNGS_BENCH_SECONDS").unwrap_or(40);
    let warmup: u64 = env_parse("RUNGS_BENCH_WARMUP").unwrap_or(8);
    let backlog: u64 = env_parse("RUNGS_BENCH_BACKLOG").unwrap_or(30);
    let bin = release_binary();
    let tmp = tempfile::Builder::new()
        .prefix("rungs-bench-rec-")
        .tempdir()
        .unwrap();
    let mut s3 = S3Server::start(&tmp.path().join("s3"));
    let toml = format!(
        "{}thumbnail_interval_s = 10\nupload_retry_max_s = 1\n",
        s3.toml("bench")
    );
    let cfg = NodeConfig {
        // A republish after this is a new stream, recorded or not as the
        // channel now says.
        reconnect_grace_s: 1.0,
        extra_toml: Box::leak(toml.into_boxed_str()),
        ..NodeConfig::default()
    };
    let node = Node::start_in(&tmp.path().join("node"), cfg, &bin);
    let pid = node.pid().expect("node pid");
    let a = node.create_channel_with_ladder("bench-a", "standard");
    let b = node.create_channel_with_ladder("bench-b", "standard");
    let chan = |c: &Channel| format!("chan-{}", &c.id[..10]);
    println!(
        "recording benchmark: release node, 2 channels (standard ladder, 720p30 ultrafast publishers), \
         S3 API on loopback (s3s-fs); {secs} s measured per round after {warmup} s"
    );

    // 1. Part latency with recording on and off, roles swapped per round.
    let mut on: HashMap<&str, Hist> = HashMap::new();
    let mut off: HashMap<&str, Hist> = HashMap::new();
    let (mut chan_on_cpu, mut chan_off_cpu, mut media_s) = (0.0, 0.0, 0.0);
    for (round, (rec, plain)) in [(&a, &b), (&b, &a)].into_iter().enumerate() {
        set_record(&node, &rec.id, true);
        set_record(&node, &plain.id, false);
        let mut pubs = vec![
            publish(&node, rec, tmp.path(), warmup + secs),
            publish(&node, plain, tmp.path(), warmup + secs),
        ];
        std::thread::sleep(Duration::from_secs(warmup));
        let (m0, c0) = (node.metrics(), thread_cpu(pid));
        std::thread::sleep(Duration::from_secs(secs));
        let (m1, c1) = (node.metrics(), thread_cpu(pid));
        for p in &mut pubs {
            p.stop();
        }
        for g in ["source", "transcoded", "audio"] {
            let d_on = hist(&m1, &rec.id, g).minus(&hist(&m0, &rec.id, g));
            let d_off = hist(&m1, &plain.id, g).minus(&hist(&m0, &plain.id, g));
            on.entry(g).or_default().add(&d_on);
            off.entry(g).or_default().add(&d_off);
        }
        chan_on_cpu += cpu_of(&c1, &chan(rec)) - cpu_of(&c0, &chan(rec));
        chan_off_cpu += cpu_of(&c1, &chan(plain)) - cpu_of(&c0, &chan(plain));
        media_s += secs as f64;
        println!(
            "round {}: recorded {}, unrecorded {}",
            round + 1,
            rec.id,
            plain.id
        );
        // The stream ends (grace), its recording is finished and uploaded.
        let done = wait_for(Duration::from_secs(60), Duration::from_millis(250), || {
            recordings(&node, &rec.id)
                .first()
                .filter(|r| r["state"] == "complete")
                .cloned()
        });
        assert!(
            done.is_some(),
            "round {} recording never completed",
            round + 1
        );
    }
    println!();
    println!(
        "ingest-to-part latency (node histogram, both rounds pooled), recorded vs unrecorded:"
    );
    println!(
        "{:<11} {:>8} {:>10} {:>10} {:>7} {:>10} {:>10} {:>7}",
        "renditions", "parts", "mean on", "mean off", "ratio", "p95 on", "p95 off", "ratio"
    );
    for g in ["source", "transcoded", "audio"] {
        let (h_on, h_off) = (&on[g], &off[g]);
        println!(
            "{:<11} {:>8.0} {:>9.3}s {:>9.3}s {:>6.3}x {:>9.3}s {:>9.3}s {:>6.3}x",
            g,
            h_on.count,
            h_on.mean(),
            h_off.mean(),
            h_on.mean() / h_off.mean(),
            h_on.quantile(0.95),
            h_off.quantile(0.95),
            h_on.quantile(0.95) / h_off.quantile(0.95),
        );
    }

    // 2. Upload throughput: a backlog recorded while the store is down.
    set_record(&node, &a.id, true);
    set_record(&node, &b.id, true);
    let mut pubs = vec![
        publish(&node, &a, tmp.path(), backlog + 5),
        publish(&node, &b, tmp.path(), backlog + 5),
    ];
    std::thread::sleep(Duration::from_secs(2));
    s3.stop();
    std::thread::sleep(Duration::from_secs(backlog));
    for p in &mut pubs {
        p.stop();
    }
    // Both recordings end (grace) and their playlists join the backlog.
    std::thread::sleep(Duration::from_secs(3));
    let m = node.metrics();
    let (spool_bytes, uploaded0) = (
        m.sum("rungs_recording_spool_bytes", &[]),
        m.sum("rungs_recording_uploaded_bytes_total", &[]),
    );
    let errors = m.sum("rungs_recording_upload_errors_total", &[]);
    let c0 = thread_cpu(pid);
    s3.restart();
    let back = Instant::now();
    // From the first byte stored (the uploader may still be waiting out its
    // backoff when the store comes back) to an empty spool.
    let mut first: Option<Instant> = None;
    let drained = wait_for(Duration::from_secs(300), Duration::from_millis(20), || {
        let m = node.metrics();
        if first.is_none() && m.sum("rungs_recording_uploaded_bytes_total", &[]) > uploaded0 {
            first = Some(Instant::now());
        }
        (m.sum("rungs_recording_spool_files", &[]) == 0.0).then(Instant::now)
    });
    let c1 = thread_cpu(pid);
    let done = drained.expect("the spool never drained");
    let took = done
        .duration_since(first.unwrap_or(back))
        .as_secs_f64()
        .max(0.001);
    let m = node.metrics();
    let sent = m.sum("rungs_recording_uploaded_bytes_total", &[]) - uploaded0;
    let io_cpu = cpu_of(&c1, "rungs-io") - cpu_of(&c0, "rungs-io");
    let made_bps = spool_bytes / (backlog as f64);
    println!();
    println!(
        "upload: {:.1} MB spooled while the store was down ({errors:.0} failed tries meanwhile); \
         the store back, the spool empty after {:.2} s (retry wait included); \
         first to last byte {took:.2} s = {:.1} MB/s, {:.0}x the rate two channels record at",
        spool_bytes / 1e6,
        done.duration_since(back).as_secs_f64(),
        sent / took / 1e6,
        (sent / took) / made_bps.max(1.0)
    );

    // 3. Disk and CPU per recorded channel-hour.
    let recs: Vec<serde_json::Value> = [&a, &b]
        .iter()
        .flat_map(|c| recordings(&node, &c.id))
        .filter(|r| r["state"] == "complete")
        .collect();
    let (bytes, dur): (f64, f64) = recs.iter().fold((0.0, 0.0), |(b, d), r| {
        (
            b + r["bytes"].as_f64().unwrap_or(0.0),
            d + r["duration_s"].as_f64().unwrap_or(0.0),
        )
    });
    let per_hour = 3600.0 / media_s;
    let chan_extra = (chan_on_cpu - chan_off_cpu) * per_hour;
    let thumbs = cpu_of(&thread_cpu(pid), "thumbnails") / (dur.max(1.0) / 3600.0);
    let upload_cpu_per_byte = io_cpu / sent.max(1.0);
    let gb_per_hour = bytes / dur.max(1.0) * 3600.0 / 1e9;
    let upload = upload_cpu_per_byte * gb_per_hour * 1e9;
    println!(
        "disk: {gb_per_hour:.2} GB per channel-hour (standard ladder from 720p at 2.5 Mb/s, {} recordings, {dur:.0} s)",
        recs.len()
    );
    println!(
        "CPU per recorded channel-hour: channel thread +{chan_extra:.1} s (recorded {:.1} s vs unrecorded {:.1} s over {media_s:.0} s), \
         thumbnails {thumbs:.1} s (one every 10 s), upload {upload:.1} s = {:.1} CPU-s ({:.3}% of one core)",
        chan_on_cpu,
        chan_off_cpu,
        chan_extra + thumbs + upload,
        (chan_extra + thumbs + upload) / 3600.0 * 100.0
    );
}
