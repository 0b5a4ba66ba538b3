//! What an operator deploys with (`deploy/`), checked with the tools that
//! will read it (one file of `tests/deploy/` each, `#[path]` keeping cargo
//! from taking them for test targets of their own):
//!
//! - `systemd_unit_*`: `deploy/rungs.service` passes `systemd-analyze verify`
//!   and scores at most 2.0 in `systemd-analyze security`, and has the
//!   directives the node's supervision relies on (notify, watchdog, the drain
//!   deadline, exit 78 not restarted, the GPU devices);
//! - `prometheus_rules_*`: `promtool check` and `promtool test rules` on
//!   `deploy/prometheus`, every alert tested firing and quiet, with a summary
//!   and a runbook section in the README;
//! - `rules_and_dashboard_read_only_exported_metrics`: every PromQL
//!   expression in the rules and the Grafana dashboard names metrics
//!   `src/metrics.rs` defines (or recorded ones) and only their labels;
//! - `grafana_*`: the dashboard and its provisioning file;
//! - `k8s_*`: `deploy/k8s` rendered by `kubectl kustomize`, validated against
//!   the Kubernetes 1.30 and 1.37 schemas (kubernetes-validate, strict), the
//!   PodMonitor against the prometheus-operator models, and the pieces
//!   checked against each other (ports, probes, drain, secrets, GPU, the cpu
//!   overlay's difference);
//! - the k8s config file is one the node itself accepts;
//! - `scrape::prometheus_scrapes_a_transcoding_node`: a real Prometheus
//!   scrapes a live node with the recording rules loaded.
//!
//! The Kubernetes tools live in `.tools/k8s` (`make k8s-tools`); Debian's
//! `prometheus` and `systemd` give promtool and systemd-analyze. A missing
//! tool fails the test with what to install, never skips it.

mod common;
#[path = "deploy/grafana.rs"]
mod grafana;
#[path = "deploy/k8s.rs"]
mod k8s;
#[path = "deploy/rules.rs"]
mod rules;
#[path = "deploy/scrape.rs"]
mod scrape;
#[path = "deploy/systemd.rs"]
mod systemd;

use common::prometheus::{
    Exported, SYNTHETIC_SERIES, TARGET_LABELS, dashboard_queries, deploy_prometheus,
    exported_metrics, prometheus_tool, promql_selected,
};
use common::{node_bin, repo_root};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

// ---------------------------------------------------------------- helpers

fn deploy(path: &str) -> PathBuf {
    repo_root().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `cmd`, feeding `stdin`; panics if it cannot start (with `hint`).
fn run(cmd: &mut Command, stdin: Option<&[u8]>, hint: &str) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}; {hint}"));
    if let Some(bytes) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(bytes)
            .expect("write to the child's stdin");
    }
    child.wait_with_output().expect("wait for the child")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Asserts that `o` succeeded, showing its output otherwise.
fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
}

const K8S_HINT: &str = "the Kubernetes tools are installed by `make k8s-tools` (or `make test`)";

fn k8s_tool(rel: &str) -> PathBuf {
    let p = repo_root().join(".tools/k8s").join(rel);
    assert!(p.exists(), "{} is missing: {K8S_HINT}", p.display());
    p
}

/// Every YAML document of `yaml` (empty ones dropped), as JSON, through the
/// PyYAML that kubernetes-validate brings into its venv.
fn yaml_docs(yaml: &str) -> Vec<Value> {
    let py = k8s_tool("venv/bin/python");
    let o = run(
        Command::new(&py).args([
            "-c",
            "import json, sys, yaml\njson.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
        ]),
        Some(yaml.as_bytes()),
        K8S_HINT,
    );
    ok(&o, "YAML to JSON");
    serde_json::from_slice(&o.stdout).expect("JSON from the converter")
}

fn yaml_file(path: &Path) -> Value {
    let mut docs = yaml_docs(&read(path));
    assert_eq!(docs.len(), 1, "{}: one YAML document", path.display());
    docs.remove(0)
}

/// A systemd unit as section -> key -> values (repeated keys accumulate).
fn parse_unit(src: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for (n, line) in src.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("unit line {}: {line:?} is not KEY=VALUE", n + 1));
        assert!(
            !section.is_empty(),
            "unit line {}: outside a section",
            n + 1
        );
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

/// `[drain] deadline_s` and `data_dir` of the config the k8s pods get.
fn k8s_config() -> toml::Table {
    let p = deploy("k8s/base/rungs.toml");
    toml::from_str(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn drain_deadline_s() -> f64 {
    k8s_config()["drain"]["deadline_s"]
        .as_float()
        .expect("[drain] deadline_s in deploy/k8s/base/rungs.toml")
}
