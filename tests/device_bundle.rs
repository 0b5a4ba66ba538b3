//! The device bundle runs away from this machine: unpacked in a minimal
//! Debian root without FFmpeg or CUDA (`.minroot`, debootstrap minbase), every
//! library its binaries link resolves inside the bundle (glibc's own
//! excepted), and its one command starts, says there is no CUDA driver, runs
//! the CPU parts of the pipeline benchmark on the bundled clip and writes its
//! figures. A bundle that cannot run on a bare GPU host fails here, not on the
//! device. `make test` builds the bundle from the debug build first
//! (`make device-proof`: the same script as `make device-bundle`, unpacked);
//! needs root, for chroot.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BINARIES: [&str; 6] = [
    "rungs",
    "device",
    "gpu-tests",
    "gpu-pipeline-tests",
    "gpu-bench",
    "gpu-pipeline-bench",
];

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bundle() -> PathBuf {
    let dir = std::env::var_os("RUNGS_DEVICE_BUNDLE").map_or_else(
        || project().join("target/device-proof/rungs-device"),
        PathBuf::from,
    );
    assert!(
        dir.join("run.sh").is_file(),
        "no device bundle at {}: run `make device-proof` (make test does)",
        dir.display()
    );
    dir
}

fn minroot() -> PathBuf {
    let root = project().join(".minroot");
    assert!(
        root.join("usr/bin/ldd").is_file(),
        "no minimal Debian root at {}: run `make device-proof` (make test does)",
        root.display()
    );
    root
}

fn am_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `script` run by sh inside `root`, with /proc and /dev there, in a mount
/// namespace of its own (the mounts vanish with it), environment cleared.
fn in_root(root: &Path, script: &str) -> std::process::Output {
    let r = root.display();
    let setup = format!(
        "mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && \
         exec chroot {r} /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
         /bin/sh -c \"$0\""
    );
    Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &setup,
            script,
        ])
        .output()
        .expect("unshare runs")
}

/// The bundle copied into a fresh folder of the root, removed when dropped.
struct Unpacked {
    inside: tempfile::TempDir,
}

impl Unpacked {
    fn new(root: &Path) -> Self {
        let inside = tempfile::Builder::new()
            .prefix("rungs-device-")
            .tempdir_in(root.join("tmp"))
            .expect("a folder in the root's /tmp");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(bundle())
            .arg(inside.path())
            .status()
            .expect("cp runs");
        assert!(copied.success(), "copy the bundle into the root");
        Self { inside }
    }

    /// The bundle's path as seen inside the root.
    fn path_in_root(&self, root: &Path) -> String {
        let rel = self
            .inside
            .path()
            .strip_prefix(root)
            .expect("inside the root");
        format!("/{}/rungs-device", rel.display())
    }

    fn host_path(&self) -> PathBuf {
        self.inside.path().join("rungs-device")
    }
}

#[test]
fn the_device_bundle_runs_in_a_root_without_ffmpeg_and_reports_no_cuda_driver() {
    assert!(am_root(), "this test needs root (chroot, mount namespace)");
    let root = minroot();
    // The root is what a bare GPU host offers: no FFmpeg, no CUDA.
    let absent = in_root(
        &root,
        "command -v ffmpeg || ls /usr/lib/x86_64-linux-gnu | grep -E '^lib(avcodec|cuda|nvrtc)' || true",
    );
    assert!(absent.status.success(), "{absent:?}");
    assert_eq!(
        String::from_utf8_lossy(&absent.stdout).trim(),
        "",
        "the proof root must have no FFmpeg and no CUDA"
    );

    let unpacked = Unpacked::new(&root);
    let b = unpacked.path_in_root(&root);

    // Every library of every binary resolves, and to the bundle's own copy
    // unless it is glibc's.
    for name in BINARIES {
        let out = in_root(
            &root,
            &format!("LD_LIBRARY_PATH={b}/lib ldd {b}/bin/{name}"),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ldd {name} in the root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in text.lines() {
            assert!(!line.contains("not found"), "{name}: {line}\n{text}");
            let Some((soname, path)) = line.split_once(" => ") else {
                continue;
            };
            let (soname, path) = (soname.trim(), path.split_whitespace().next().unwrap_or(""));
            let glibc = [
                "libc.so",
                "libm.so",
                "ld-linux",
                "libpthread.so",
                "libdl.so",
                "librt.so",
                "libutil.so",
                "libresolv.so",
                "libanl.so",
                "libmvec.so",
            ];
            if !glibc.iter().any(|g| soname.starts_with(g)) {
                assert!(
                    path.starts_with(&format!("{b}/lib/")),
                    "{name}: {soname} resolves outside the bundle, to {path}"
                );
            }
        }
    }

    // The one command, its CPU parts kept short: one file round, one live step.
    let run = in_root(
        &root,
        &format!(
            "RUNGS_BENCH_ROUNDS=1 RUNGS_BENCH_LIVE_STEPS=1 RUNGS_BENCH_LIVE_SECONDS=12 \
             RUNGS_BENCH_LIVE_WARMUP=5 {b}/run.sh {b}/out"
        ),
    );
    let out_dir = unpacked.host_path().join("out");
    let log = |name: &str| std::fs::read_to_string(out_dir.join(name)).unwrap_or_default();
    let context = format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}\npipeline.log:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
        log("pipeline.log")
    );
    assert!(
        run.status.success(),
        "run.sh failed in the root:\n{context}"
    );
    let figures: Value = serde_json::from_str(&log("figures.json"))
        .unwrap_or_else(|e| panic!("figures.json: {e}\n{context}"));

    assert_eq!(figures["gpu"]["usable"], false, "{figures:#}");
    let why = figures["gpu"]["why"].as_str().unwrap_or("");
    assert!(why.starts_with("no CUDA driver"), "why: {why:?}");
    assert!(figures["probe"].is_object(), "rungs probe ran: {figures:#}");
    // The kernels travel as PTX inside the binary: a GPU host has no NVRTC.
    let kernels = figures["probe"]["kernels"]["detail"].as_str().unwrap_or("");
    assert!(
        kernels.starts_with("PTX embedded for compute_75"),
        "the bundled rungs must embed its PTX (build with NVRTC on the library path, as \
         the Makefile does): {kernels:?}"
    );
    for step in ["tests", "kernels"] {
        assert_eq!(figures[step]["skipped"].as_str(), Some(why), "{step}");
    }
    assert_eq!(figures["failed"], serde_json::json!([]), "{figures:#}");

    let pipeline = &figures["pipeline"]["figures"];
    let file = &pipeline["file"];
    let cpu = &file["contenders"]["rungs-cpu"];
    assert!(
        cpu["fps"].as_f64().is_some_and(|f| f > 0.0),
        "the CPU backend transcoded the bundled clip: {pipeline:#}"
    );
    assert!(file["contenders"]["rungs-gpu"].is_null(), "{pipeline:#}");
    assert!(
        file["frames"].as_u64().is_some_and(|f| f >= 150),
        "the whole 6-s clip was read: {pipeline:#}"
    );
    // Without an FFmpeg CLI every rung's quality comes from rungs' own report.
    for rung in file["rungs"].as_array().expect("rungs") {
        let psnr = rung["by"]["rungs-cpu"]["psnr_db"].as_f64();
        assert!(psnr.is_some_and(|p| p > 25.0), "{rung}");
    }
    let live = &pipeline["live"];
    let step = &live["cpu"]["steps"][0];
    assert_eq!(step["n"], 1, "one live channel was tried: {live:#}");
    assert!(
        step["worst_ratio"].as_f64().is_some_and(|r| r > 0.0),
        "the live channel was published and transcoded: {live:#}"
    );
}
