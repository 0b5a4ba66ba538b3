//! Every GPU figure of the project in one command, for a GPU machine lent for
//! minutes: run from the device bundle (`make device-bundle`, then
//! `rungs-device/run.sh OUT` there), on a host with the NVIDIA driver and
//! nothing else (no Rust, no FFmpeg, no CUDA toolkit: the bundle carries the
//! binaries, their shared libraries and the media). Writes `OUT/figures.json`
//! and one log per step; exits non-zero when a step failed.
//!
//! Steps, each under a time limit, under 8 minutes in all (30 + 2 x 80 + 45 +
//! 240 s at most; the live part stops raising N when its budget is spent):
//! 1. `rungs probe --json`: device, driver, NVDEC, NVENC, kernels. Without a
//!    usable GPU, `figures.json` says why (for example "no CUDA driver") and
//!    only the CPU parts run, which is how the bundle is proven on a machine
//!    without a GPU (tests/device_bundle.rs).
//! 2. The `gpu_*` tests (tests/gpu.rs, tests/gpu_pipeline.rs), each one's
//!    result.
//! 3. The kernel benchmark (bench/gpu.rs): ladder scale time per 1080p frame,
//!    its bandwidth against a device copy, PSNR+SSIM pairs per second.
//! 4. The pipeline benchmark (bench/gpu_pipeline.rs): `rungs transcode` GPU vs
//!    CPU backend on the bundled clip, then live 1080p30 ladders per node.
//!
//! Env: RUNGS_DEVICE_SKIP (comma-separated steps to leave out: `tests`,
//! `kernels`, `pipeline`); the benchmarks' own RUNGS_BENCH_* variables pass
//! through, with defaults sized for the time limit set here when unset.

use serde_json::{Map, Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The bundle's binaries, in `bin/`, by the names bench/device/bundle.sh gives them.
const RUNGS: &str = "rungs";
const TEST_BINARIES: [&str; 2] = ["gpu-tests", "gpu-pipeline-tests"];
const KERNEL_BENCH: &str = "gpu-bench";
const PIPELINE_BENCH: &str = "gpu-pipeline-bench";
/// The pipeline benchmark's input, in `media/`: tests/gpu_pipeline.rs's clip
/// (6 s of 1080p30 H.264 High at 4 Mb/s with AAC), so it travels once.
const PIPELINE_INPUT: &str = "gpu-pipeline-1080p.mp4";

/// Defaults for the pipeline benchmark that keep the run inside its limit;
/// each applies only when the variable is unset.
const PIPELINE_DEFAULTS: [(&str, &str); 6] = [
    ("RUNGS_BENCH_ROUNDS", "3"),
    ("RUNGS_BENCH_LIVE_STEPS", "4,8,12,16,20,24,32,40"),
    ("RUNGS_BENCH_LIVE_SECONDS", "15"),
    ("RUNGS_BENCH_LIVE_WARMUP", "5"),
    ("RUNGS_BENCH_LIVE_MAX", "48"),
    // Of PIPELINE_LIMIT: what the file part (about 30 s) leaves.
    ("RUNGS_BENCH_LIVE_BUDGET_S", "190"),
];

/// Each step's limit; together under 8 minutes.
const PROBE_LIMIT: Duration = Duration::from_secs(30);
const TESTS_LIMIT: Duration = Duration::from_secs(80);
const KERNELS_LIMIT: Duration = Duration::from_secs(45);
const PIPELINE_LIMIT: Duration = Duration::from_secs(240);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(out) = std::env::args().skip(1).find(|a| !a.starts_with('-')) else {
        eprintln!("usage: run.sh OUT_DIR");
        std::process::exit(2);
    };
    let out = PathBuf::from(out);
    let bundle = bundle_root();
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("device: cannot create {}: {e}", out.display());
        std::process::exit(2);
    }
    let work = std::env::temp_dir().join(format!("rungs-device-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&work);
    let skip = std::env::var("RUNGS_DEVICE_SKIP").unwrap_or_default();
    let skipped = |step: &str| skip.split(',').any(|s| s.trim() == step);

    let started = Instant::now();
    let mut figures = Map::new();
    figures.insert("bundle".into(), bundle_info(&bundle));
    figures.insert("host".into(), host_info());
    let mut failed: Vec<String> = Vec::new();

    let bin = |name: &str| bundle.join("bin").join(name);
    let media = bundle.join("media");
    let (probe, gpu) = probe(&bin(RUNGS), &out);
    match &gpu {
        Ok(name) => println!("device: GPU {name}"),
        Err(why) => println!("device: no usable GPU ({why}); only the CPU parts run"),
    }
    figures.insert("probe".into(), probe);
    figures.insert(
        "gpu".into(),
        match &gpu {
            Ok(name) => json!({ "usable": true, "name": name }),
            Err(why) => json!({ "usable": false, "why": why }),
        },
    );

    // 2. The gpu_* tests.
    let tests = if skipped("tests") {
        json!({ "skipped": "RUNGS_DEVICE_SKIP" })
    } else if let Err(why) = &gpu {
        json!({ "skipped": why })
    } else {
        let mut results = Map::new();
        let mut log = String::new();
        for name in TEST_BINARIES {
            let mut cmd = Command::new(bin(name));
            cmd.args(["--ignored", "--test-threads=1"])
                .env("RUNGS_GPU_FRAMES", &media)
                .env("RUNGS_BIN", bin(RUNGS));
            let step = run(&mut cmd, TESTS_LIMIT);
            log.push_str(&format!("== {name}\n{}\n", step.text));
            let parsed = test_results(&step.text);
            if !step.ok || parsed.values().any(|r| r != "ok") {
                failed.push(format!("tests ({name})"));
            }
            results.insert(
                name.into(),
                json!({ "ok": step.ok, "seconds": step.seconds, "status": step.status, "tests": parsed }),
            );
        }
        write_log(&out, "tests.log", &log);
        Value::Object(results)
    };
    figures.insert("tests".into(), tests);

    // 3. The kernels.
    let kernels = if skipped("kernels") {
        json!({ "skipped": "RUNGS_DEVICE_SKIP" })
    } else if let Err(why) = &gpu {
        json!({ "skipped": why })
    } else {
        let json_path = work.join("kernels.json");
        let mut cmd = Command::new(bin(KERNEL_BENCH));
        cmd.arg("--bench").env("RUNGS_BENCH_JSON", &json_path);
        let step = run(&mut cmd, KERNELS_LIMIT);
        write_log(&out, "kernels.log", &step.text);
        if !step.ok {
            failed.push("kernels".into());
        }
        read_json(&json_path, &step)
    };
    figures.insert("kernels".into(), kernels);

    // 4. The pipeline: GPU and CPU backends, or the CPU alone without a GPU.
    let pipeline = if skipped("pipeline") {
        json!({ "skipped": "RUNGS_DEVICE_SKIP" })
    } else {
        let json_path = work.join("pipeline.json");
        let mut cmd = Command::new(bin(PIPELINE_BENCH));
        cmd.arg("--bench")
            .env("RUNGS_BENCH_JSON", &json_path)
            .env("RUNGS_BENCH_BIN", bin(RUNGS))
            .env("RUNGS_BENCH_INPUT", media.join(PIPELINE_INPUT))
            .env("RUNGS_BENCH_DIR", work.join("pipeline"));
        for (k, v) in PIPELINE_DEFAULTS {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        if gpu.is_err() {
            cmd.env("RUNGS_BENCH_ALLOW_NO_GPU", "1");
        }
        let step = run(&mut cmd, PIPELINE_LIMIT);
        write_log(&out, "pipeline.log", &step.text);
        if !step.ok {
            failed.push("pipeline".into());
        }
        read_json(&json_path, &step)
    };
    figures.insert("pipeline".into(), pipeline);

    figures.insert("seconds".into(), started.elapsed().as_secs_f64().into());
    figures.insert("failed".into(), json!(failed));
    let text = serde_json::to_string_pretty(&Value::Object(figures)).expect("JSON");
    let path = out.join("figures.json");
    if let Err(e) = std::fs::write(&path, text + "\n") {
        eprintln!("device: cannot write {}: {e}", path.display());
        std::process::exit(2);
    }
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "device: {} in {:.0} s{}",
        path.display(),
        started.elapsed().as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; FAILED: {}", failed.join(", "))
        }
    );
    std::process::exit(i32::from(!failed.is_empty()));
}

/// The bundle's root: RUNGS_BUNDLE, else the folder above this binary's `bin/`.
fn bundle_root() -> PathBuf {
    if let Some(root) = std::env::var_os("RUNGS_BUNDLE") {
        return PathBuf::from(root);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// What bundle.sh wrote into `VERSION` (commit, build date), line by line.
fn bundle_info(bundle: &Path) -> Value {
    let text = std::fs::read_to_string(bundle.join("VERSION")).unwrap_or_default();
    let mut info = Map::new();
    info.insert("path".into(), bundle.display().to_string().into());
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            info.insert(k.trim().into(), v.trim().into());
        }
    }
    Value::Object(info)
}

fn host_info() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    json!({ "cpus": cpus, "cpu_model": model, "memory_gib": memory_kib as f64 / 1048576.0 })
}

/// `rungs probe --json` and, from it, the GPU's name or why there is no usable one.
fn probe(rungs: &Path, out: &Path) -> (Value, Result<String, String>) {
    let mut cmd = Command::new(rungs);
    cmd.args(["probe", "--json"]);
    let step = run(&mut cmd, PROBE_LIMIT);
    write_log(out, "probe.log", &step.text);
    if !step.ok {
        let why = format!("`rungs probe` failed: {}", step.text.trim());
        return (Value::Null, Err(why));
    }
    // The JSON is the first line that parses; warnings may precede it.
    let Some(p) = step
        .text
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
    else {
        return (
            Value::Null,
            Err("`rungs probe --json` printed no JSON".into()),
        );
    };
    let detail = |k: &str| p[k]["detail"].as_str().unwrap_or("?").to_string();
    let gpu = if p["driver"].is_null() {
        Err(format!("no CUDA driver: {}", detail("nvdec")))
    } else if let Some(dev) = p["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["selected"] == true))
    {
        if p["kernels"]["usable"] != true {
            Err(format!("CUDA kernels not usable: {}", detail("kernels")))
        } else {
            Ok(dev["name"].as_str().unwrap_or("?").to_string())
        }
    } else {
        Err("the CUDA driver sees no (selected) GPU".into())
    };
    (p, gpu)
}

struct Step {
    ok: bool,
    /// The exit status, or why there is none.
    status: String,
    seconds: f64,
    /// stdout then stderr.
    text: String,
}

/// Runs `cmd` with its output captured, killed at `limit`.
fn run(cmd: &mut Command, limit: Duration) -> Step {
    let started = Instant::now();
    println!("device: {cmd:?}");
    let spawned = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return Step {
                ok: false,
                status: format!("cannot start: {e}"),
                seconds: 0.0,
                text: format!("cannot start {cmd:?}: {e}"),
            };
        }
    };
    // Readers on their own threads, so a full pipe never stalls the child.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let mut bytes = Vec::new();
                let _ = p.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.to_string(),
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break format!("killed after its {} s limit", limit.as_secs());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => break format!("wait failed: {e}"),
        }
    };
    let ok = status == "exit status: 0";
    let text = format!(
        "{}{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    print!("{text}");
    println!(
        "device: {status} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Step {
        ok,
        status,
        seconds: started.elapsed().as_secs_f64(),
        text,
    }
}

/// libtest's `test NAME ... ok|FAILED|ignored` lines, by test name.
fn test_results(text: &str) -> Map<String, Value> {
    text.lines()
        .filter_map(|l| {
            let (name, result) = l.strip_prefix("test ")?.rsplit_once(" ... ")?;
            Some((name.to_string(), Value::from(result.trim())))
        })
        .collect()
}

/// The figures a benchmark wrote, or what went wrong.
fn read_json(path: &Path, step: &Step) -> Value {
    let figures = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    json!({
        "ok": step.ok,
        "status": step.status,
        "seconds": step.seconds,
        "figures": figures,
    })
}

fn write_log(out: &Path, name: &str, text: &str) {
    if let Err(e) = std::fs::write(out.join(name), text) {
        eprintln!("device: cannot write {name}: {e}");
    }
}
