//! `rungs probe` and `gpu.enabled` from the command line, as an operator
//! meets them. On a machine without a CUDA driver (CI) the answers are the
//! CPU ones; with a driver, they must at least be consistent.

use std::process::Command;

fn rungs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rungs"))
        .args(args)
        .output()
        .expect("run rungs")
}

#[test]
fn probe_prints_a_report_and_json_and_exits_zero() {
    let text = rungs(&["probe"]);
    assert!(text.status.success(), "{text:?}");
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("backends: decode "), "{stdout}");

    let json = rungs(&["probe", "--json"]);
    assert!(json.status.success(), "{json:?}");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    for stage in ["decode", "scale", "encode", "quality"] {
        assert!(v["backends"][stage].is_string(), "{v}");
    }
    if v["driver"].is_null() {
        assert!(
            stdout.starts_with("no CUDA driver: CPU backends"),
            "{stdout}"
        );
        assert_eq!(v["backends"]["scale"], "cpu");
        assert_eq!(v["devices"], serde_json::json!([]));
    }
}

#[test]
fn on_without_a_usable_gpu_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = rungs(&["probe", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("json");
    // Select a GPU index that cannot exist, so that the answer is "no" everywhere.
    let config = dir.path().join("rungs.toml");
    std::fs::write(&config, "[gpu]\nenabled = \"on\"\ndevices = [999]\n").expect("config");
    let config = config.to_str().expect("utf-8 path");
    let data = dir.path().join("data");
    let out = rungs(&[
        "serve",
        "--config",
        config,
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--rtmp-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success(), "serve must refuse to start: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gpu.enabled = \"on\" but "), "{stderr}");
    let expected = if v["driver"].is_null() {
        "no usable CUDA driver"
    } else if v["devices"] == serde_json::json!([]) {
        "sees no GPU"
    } else {
        "selects none of the GPUs"
    };
    assert!(stderr.contains(expected), "{stderr}");
}
