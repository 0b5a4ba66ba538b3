//! The live part of bench/gpu_pipeline.rs: for N in the steps, one `rungs
//! serve` with N `standard` channels published over RTMP, and whether every
//! channel holds in real time. Each channel is published in process by
//! publish.rs (no FFmpeg command line needed).

#[path = "publish.rs"]
mod publish;

use crate::env::env_parse;
use crate::ladder_bench::{check, clock_ticks};
use crate::{GOAL_REDUCTION_PCT, fail, write_config};
use publish::Publisher;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Livepeer measure: encode time over media time of each GOP.
const MAX_RATIO: f64 = 0.8;

struct Step {
    n: usize,
    held: bool,
    why: Vec<String>,
    worst_ratio: f64,
    /// Node CPU seconds per stream per second of the window.
    cpu_per_stream: f64,
}

impl Step {
    fn json(&self) -> Value {
        json!({
            "n": self.n,
            "held": self.held,
            "worst_ratio": self.worst_ratio,
            "cpu_per_stream_s_per_s": self.cpu_per_stream,
            "why": self.why,
        })
    }
}

/// Runs the steps per backend and prints them; returns the same as JSON:
/// `{"max_ratio", "seconds", "warmup_s", "gpu": {..}, "cpu": {..},
/// "cpu_per_stream_reduction_pct"}`, each backend run as `{"steps": [{"n",
/// "held", "worst_ratio", "cpu_per_stream_s_per_s", "why": [..]}],
/// "max_held_n"}` (`null`: not even the first step held) or `{"skipped":
/// why}`; the reduction (GPU node against CPU node, each at its largest
/// step that held) is `null` unless both held a step.
pub fn live_part(bin: &Path, dir: &Path, input: &Path, gpu: bool) -> Value {
    let backends = std::env::var("RUNGS_BENCH_LIVE_BACKENDS").unwrap_or_else(|_| "gpu,cpu".into());
    let max: usize = env_parse("RUNGS_BENCH_LIVE_MAX").unwrap_or(64);
    let steps: Vec<usize> = std::env::var("RUNGS_BENCH_LIVE_STEPS")
        .unwrap_or_else(|_| "2,4,8,12,16,20,24,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n >= 1 && n <= max)
        .collect();
    let secs: f64 = env_parse("RUNGS_BENCH_LIVE_SECONDS").unwrap_or(30.0);
    // A time budget for the whole live part (the device run has minutes):
    // each backend gets an equal share of what is left when it starts, and
    // stops raising N when the next step would not fit, saying so.
    let budget: Option<f64> = env_parse("RUNGS_BENCH_LIVE_BUDGET_S");
    let started = Instant::now();
    let warmup: f64 = env_parse("RUNGS_BENCH_LIVE_WARMUP").unwrap_or(8.0);
    if warmup + 2.0 > secs {
        fail("RUNGS_BENCH_LIVE_SECONDS must exceed RUNGS_BENCH_LIVE_WARMUP by 2 s or more");
    }
    println!(
        "\n== live: N x (1080p30 RTMP -> standard 4-rung ladder) on one node, \
         {secs} s each ({warmup} s warm-up not measured); holds: realtime ratio \
         <= {MAX_RATIO}, no dropped GOP"
    );
    let mut best: Vec<(&str, Option<Step>)> = Vec::new();
    let mut summary = json!({
        "max_ratio": MAX_RATIO,
        "seconds": secs,
        "warmup_s": warmup,
        "cpu_per_stream_reduction_pct": null,
    });
    let backends: Vec<&str> = backends.split(',').map(str::trim).collect();
    for (i, &backend) in backends.iter().enumerate() {
        let on = match backend {
            "gpu" => true,
            "cpu" => false,
            other => fail(&format!("RUNGS_BENCH_LIVE_BACKENDS: unknown {other:?}")),
        };
        if on && !gpu {
            println!("live gpu: SKIPPED (no usable GPU)");
            summary["gpu"] = json!({ "skipped": "no usable GPU" });
            continue;
        }
        println!(
            "\n{:<4}  {:>3}  {:>5}  {:>11}  {:>15}  {:>16}  why not",
            "node", "N", "held", "worst ratio", "CPU s/stream/s", "CPU s/stream min"
        );
        let mut held: Option<Step> = None;
        let mut tried = Vec::new();
        let share =
            budget.map(|b| (b - started.elapsed().as_secs_f64()) / (backends.len() - i) as f64);
        let own = Instant::now();
        let mut out_of_time = false;
        for &n in &steps {
            // A step takes its seconds plus the node's start and stop.
            if share.is_some_and(|s| own.elapsed().as_secs_f64() + secs + 8.0 > s) {
                println!("{backend:<4}  {n:>3}  not tried: the live time budget is spent");
                out_of_time = true;
                break;
            }
            let step = live_step(bin, dir, input, on, n, secs, warmup);
            println!(
                "{backend:<4}  {n:>3}  {:>5}  {:>11.3}  {:>15.3}  {:>16.1}  {}",
                if step.held { "yes" } else { "NO" },
                step.worst_ratio,
                step.cpu_per_stream,
                step.cpu_per_stream * 60.0,
                step.why.join("; ")
            );
            tried.push(step.json());
            if !step.held {
                break;
            }
            held = Some(step);
        }
        let name = if on { "gpu" } else { "cpu" };
        summary[name] = json!({
            "steps": tried,
            "max_held_n": held.as_ref().map(|s| s.n),
            // A lower bound only: the budget ran out while every step held.
            "stopped_by_time_budget": out_of_time,
        });
        best.push((name, held));
    }
    println!();
    for (backend, step) in &best {
        match step {
            Some(s) => println!(
                "live {backend}: {} streams held (largest step tried that held), \
                 {:.3} host CPU-s per stream per second ({:.1} per stream minute)",
                s.n,
                s.cpu_per_stream,
                s.cpu_per_stream * 60.0
            ),
            None => println!("live {backend}: not even the first step held"),
        }
    }
    let held_at = |b: &str| best.iter().find(|e| e.0 == b).and_then(|e| e.1.as_ref());
    if let (Some(g), Some(c)) = (held_at("gpu"), held_at("cpu")) {
        let reduction = (1.0 - g.cpu_per_stream / c.cpu_per_stream) * 100.0;
        println!(
            "live host CPU per stream, GPU vs CPU node: {reduction:+.1}% less (goal >= \
             {GOAL_REDUCTION_PCT:.0}%; GPU at N={}, CPU at N={})",
            g.n, c.n
        );
        summary["cpu_per_stream_reduction_pct"] = json!(reduction);
    }
    summary
}

/// Kills the processes it holds when dropped, so a panic leaves none behind.
/// (The publishers stop themselves when dropped.)
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn live_step(
    bin: &Path,
    dir: &Path,
    input: &Path,
    gpu: bool,
    n: usize,
    secs: f64,
    warmup: f64,
) -> Step {
    let data = dir.join(format!("live-{}-{n}", if gpu { "gpu" } else { "cpu" }));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("create the node's data dir");
    let (rtmp, http, admin) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let cfg = write_config(
        &data,
        "config.toml",
        gpu,
        &format!("\n[whip]\nudp_addr = \"127.0.0.1:{udp}\"\n"),
    );
    // (id, stream key) of each channel.
    let channels: Vec<(String, String)> = (0..n)
        .map(|i| {
            let mut cmd = Command::new(bin);
            cmd.args(["channel", "create", "--ladder", "standard", "--json"])
                .arg("--name")
                .arg(format!("bench{i}"))
                .arg("--data-dir")
                .arg(&data)
                .arg("--config")
                .arg(&cfg);
            let out = check(&mut cmd).unwrap_or_else(|e| fail(&e));
            let ch: Value = serde_json::from_slice(&out).expect("channel JSON");
            let s = |k: &str| {
                ch[k]
                    .as_str()
                    .expect("channel has id and stream_key")
                    .to_string()
            };
            (s("id"), s("stream_key"))
        })
        .collect();

    let log_path = data.join("node.log");
    let log = std::fs::File::create(&log_path).expect("node log");
    let node = Command::new(bin)
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--rtmp-addr")
        .arg(format!("127.0.0.1:{rtmp}"))
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--config")
        .arg(&cfg)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start rungs serve");
    let node_pid = node.id();
    let mut procs = Procs(vec![node]);
    let base = format!("http://127.0.0.1:{http}");
    // /metrics is on the admin listener.
    let admin_base = format!("http://127.0.0.1:{admin}");
    let up = Instant::now();
    while get(&format!("{base}/healthz")).is_none() {
        if let Ok(Some(st)) = procs.0[0].try_wait() {
            fail(&format!(
                "rungs serve exited ({st}) before /healthz answered; {}:\n{}",
                log_path.display(),
                tail(&log_path)
            ));
        }
        if up.elapsed() > Duration::from_secs(60) {
            fail(&format!(
                "rungs serve did not answer /healthz in 60 s; {}",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let started = Instant::now();
    let mut publishers: Vec<Publisher> = Vec::new();
    for (i, (_, key)) in channels.iter().enumerate() {
        let url = format!("rtmp://127.0.0.1:{rtmp}/live/{key}");
        match Publisher::start(input, &url) {
            Ok(p) => publishers.push(p),
            Err(e) => {
                // fail() exits without running destructors: stop them first.
                drop(publishers);
                drop(procs);
                fail(&format!("cannot start publisher {i}: {e}"));
            }
        }
    }
    let until = |t: f64| {
        let left = t - started.elapsed().as_secs_f64();
        if left > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(left));
        }
    };
    until(warmup);
    let metrics = |base: &str| parse_metrics(&get(&format!("{base}/metrics")).unwrap_or_default());
    let (cpu0, t0, m0) = (process_cpu(node_pid), Instant::now(), metrics(&admin_base));
    let mut worst: BTreeMap<&str, f64> = BTreeMap::new();
    let mut why = Vec::new();
    let mut nvdec_min = usize::MAX;
    let mut t = warmup;
    while t < secs {
        t += 1.0;
        until(t);
        let m = metrics(&admin_base);
        for s in m.iter().filter(|s| s.name == "rungs_rung_realtime_ratio") {
            if let Some((id, _)) = channels.iter().find(|c| s.label("channel") == Some(&c.0)) {
                let w = worst.entry(id.as_str()).or_insert(0.0);
                *w = w.max(s.value);
            }
        }
        let nvdec: f64 = m
            .iter()
            .filter(|s| s.name == "rungs_gpu_sessions" && s.label("kind") == Some("nvdec"))
            .map(|s| s.value)
            .sum();
        nvdec_min = nvdec_min.min(nvdec as usize);
    }
    let (cpu1, t1, m1) = (process_cpu(node_pid), Instant::now(), metrics(&admin_base));
    for (i, p) in publishers.iter_mut().enumerate() {
        match p.exited() {
            None => {}
            Some(Ok(())) => why.push(format!("publisher {i} stopped")),
            Some(Err(e)) => why.push(format!("publisher {i} went down: {e}")),
        }
    }
    if let Ok(Some(st)) = procs.0[0].try_wait() {
        why.push(format!("the node exited ({st}); {}", log_path.display()));
    }
    // All at once; each drop then waits for its thread.
    publishers.iter().for_each(Publisher::stop);
    drop(publishers);
    drop(procs);

    let mut dropped = 0.0;
    let mut silent = 0;
    for (id, _) in &channels {
        let sum = |m: &[Sample]| -> f64 {
            m.iter()
                .filter(|s| {
                    s.name == "rungs_rung_dropped_gops_total" && s.label("channel") == Some(id)
                })
                .map(|s| s.value)
                .sum()
        };
        dropped += sum(&m1) - sum(&m0);
        if !worst.contains_key(id.as_str()) {
            silent += 1;
        }
    }
    let worst_ratio = worst.values().copied().fold(0.0, f64::max);
    if silent > 0 {
        why.push(format!("{silent} channel(s) reported no realtime ratio"));
    }
    if worst_ratio > MAX_RATIO {
        let over = worst.values().filter(|&&r| r > MAX_RATIO).count();
        why.push(format!("{over} channel(s) above {MAX_RATIO}"));
    }
    if dropped > 0.0 {
        why.push(format!("{dropped} GOP(s) dropped"));
    }
    if gpu {
        let fallbacks: f64 = m1
            .iter()
            .filter(|s| s.name == "rungs_decode_backend_fallbacks_total")
            .map(|s| s.value)
            .sum();
        if fallbacks > 0.0 || nvdec_min < n {
            why.push(format!(
                "GPU decode fell back ({fallbacks} decode fallback(s), as few as {nvdec_min} \
                 NVDEC sessions for {n} streams)"
            ));
        }
    }
    Step {
        n,
        held: why.is_empty(),
        why,
        worst_ratio,
        cpu_per_stream: (cpu1 - cpu0) / n as f64 / (t1 - t0).as_secs_f64(),
    }
}

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels.iter().find(|l| l.0 == k).map(|l| l.1.as_str())
    }
}

/// The Prometheus text format, as far as this bench needs it (label values
/// without escaped quotes or commas: channel ids, rung names).
fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some(Sample {
                name: name.to_string(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

fn get(url: &str) -> Option<String> {
    let mut res = ureq::get(url).call().ok()?;
    res.body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .ok()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port()
}

/// utime + stime of a running process, every thread, in seconds.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let f: Vec<f64> = stat[close + 2..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (1-based) of the whole line; `f` starts at field 3.
    (f[11] + f[12]) / clock_ticks()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
