//! What an operator deploys with (`deploy/`), checked with the tools that
//! will read it, offline:
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
//! - the k8s config file is one the node itself accepts.
//!
//! The Kubernetes tools live in `.tools/k8s` (`make k8s-tools`); Debian's
//! `prometheus` and `systemd` give promtool and systemd-analyze. A missing
//! tool fails the test with what to install, never skips it.

mod common;

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

// ---------------------------------------------------------------- systemd

#[test]
fn systemd_unit_has_what_the_node_relies_on() {
    let unit = parse_unit(&read(&deploy("rungs.service")));
    let s = &unit["Service"];
    let one = |k: &str| -> &str {
        let v = s.get(k).unwrap_or_else(|| panic!("[Service] has no {k}="));
        assert_eq!(v.len(), 1, "[Service] {k}= given {} times", v.len());
        &v[0]
    };
    let want = [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        // EX_CONFIG, what the node exits with on a config error.
        ("RestartPreventExitStatus", "78"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("EnvironmentFile", "-/etc/rungs/rungs.env"),
        ("WorkingDirectory", "/var/lib/rungs"),
        ("StateDirectory", "rungs"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("DevicePolicy", "closed"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("LimitNOFILE", "65536"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        ),
    ];
    for (k, v) in want {
        assert_eq!(one(k), v, "[Service] {k}=");
    }
    assert!(
        s["SystemCallFilter"].contains(&"@system-service".to_string()),
        "SystemCallFilter=@system-service: {:?}",
        s["SystemCallFilter"]
    );

    // The data dir the unit gives the node is the one systemd makes writable.
    let exec = one("ExecStart");
    assert!(
        exec.starts_with("/usr/local/bin/rungs serve ")
            && exec.contains("--config /etc/rungs/rungs.toml")
            && exec.contains("--data-dir /var/lib/rungs"),
        "ExecStart={exec}"
    );
    // The player page's hls.js: an absolute path, as the working directory
    // has no node_modules.
    let env = &s["Environment"];
    assert!(
        env.iter()
            .any(|e| e == "RUNGS_PLAYER__HLS_JS=/usr/share/rungs/hls.min.js"),
        "Environment= must point hls_js at an installed file: {env:?}"
    );

    // Stop waits for the whole drain, with a margin.
    let stop: f64 = one("TimeoutStopSec").parse().expect("TimeoutStopSec in s");
    let deadline = drain_deadline_s();
    assert!(
        stop >= deadline + 10.0,
        "TimeoutStopSec={stop} leaves no margin past the drain deadline {deadline} s"
    );

    // Every NVIDIA device group CUDA, NVDEC and NVENC open.
    let devices = &s["DeviceAllow"];
    for group in [
        "char-nvidiactl",
        "char-nvidia-frontend",
        "char-nvidia-uvm",
        "char-nvidia-caps",
    ] {
        assert!(
            devices.contains(&format!("{group} rw")),
            "DeviceAllow={group} rw missing: {devices:?}"
        );
    }
    // PrivateDevices would hide them.
    assert!(
        !s.contains_key("PrivateDevices"),
        "PrivateDevices hides GPUs"
    );
    assert!(
        unit["Install"]["WantedBy"] == ["multi-user.target"],
        "WantedBy=multi-user.target"
    );
}

#[test]
fn systemd_unit_verifies_and_is_confined() {
    // verify checks that ExecStart's binary exists: point it at the built one.
    let dir = tempfile::tempdir().unwrap();
    let src = read(&deploy("rungs.service"));
    assert!(src.contains("/usr/local/bin/rungs"));
    let unit = dir.path().join("rungs.service");
    fs::write(
        &unit,
        src.replace("/usr/local/bin/rungs", &node_bin().display().to_string()),
    )
    .unwrap();
    let hint = "systemd-analyze comes with Debian's `systemd` package (`make test` installs it)";
    let o = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit),
        None,
        hint,
    );
    ok(&o, "systemd-analyze verify");
    // Unknown keys and bad values are warnings with exit 0: none allowed.
    let noise = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        noise.trim().is_empty(),
        "systemd-analyze verify complained:\n{noise}"
    );

    // Exposure in tenths: 20 = 2.0 ("OK"); the unit scores 1.6 today.
    let o = run(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
            .arg(&unit),
        None,
        hint,
    );
    let out = text(&o.stdout);
    let overall = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("(no overall line)");
    assert!(
        o.status.success(),
        "systemd-analyze security: exposure above 2.0: {overall}\n{out}{}",
        text(&o.stderr)
    );
}

// ---------------------------------------------------------------- Prometheus

#[test]
fn prometheus_rules_and_config_pass_promtool() {
    let promtool = prometheus_tool("promtool");
    let dir = deploy("prometheus");
    for args in [
        vec!["check", "rules", "rungs.rules.yml"],
        vec!["check", "config", "prometheus.yml"],
        vec!["test", "rules", "rungs.rules.test.yml"],
    ] {
        let o = run(
            Command::new(&promtool).args(&args).current_dir(&dir),
            None,
            "install Debian's prometheus package",
        );
        ok(&o, &format!("promtool {}", args.join(" ")));
    }
}

/// The alerting rules of rungs.rules.yml, by name.
fn alerts() -> BTreeMap<String, Value> {
    let rules = yaml_file(&deploy_prometheus("rungs.rules.yml"));
    let mut out = BTreeMap::new();
    for g in rules["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            if let Some(name) = r["alert"].as_str() {
                assert!(
                    out.insert(name.to_string(), r.clone()).is_none(),
                    "alert {name} twice"
                );
            }
        }
    }
    out
}

/// The README anchor GitHub makes of a `### Name` heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn prometheus_rules_every_alert_tested_firing_and_quiet_with_runbook() {
    let alerts = alerts();
    // What the task of these rules is: each of these must stay covered.
    for must in [
        "RungsTargetDown",
        "RungsIngestStalled",
        "RungsRealtimeRatioHigh",
        "RungsRungGopsDropped",
        "RungsIngestFallingBehind",
        "RungsPartLatencyHigh",
        "RungsQualityLow",
        "RungsGpuMemoryHigh",
        "RungsEncoderFallbackToCpu",
        "RungsRecordingSpoolGrowing",
        "RungsRecordingUploadsFailing",
    ] {
        assert!(alerts.contains_key(must), "no alert {must}");
    }
    for (name, r) in &alerts {
        let sev = r["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning", "info"].contains(&sev),
            "{name}: severity {sev:?}"
        );
        let summary = r["annotations"]["summary"].as_str().unwrap_or("");
        assert!(summary.len() > 10, "{name}: no summary");
        assert_eq!(
            r["annotations"]["runbook_url"].as_str(),
            Some(format!("README.md#{}", anchor(name)).as_str()),
            "{name}: runbook_url must point at the README's `### {name}`"
        );
    }

    // Each alert has a test where it fires and one where it stays quiet.
    let tests = yaml_file(&deploy_prometheus("rungs.rules.test.yml"));
    assert_eq!(
        tests["rule_files"],
        serde_json::json!(["rungs.rules.yml"]),
        "the tests load the shipped rules"
    );
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = a["alertname"].as_str().expect("alertname").to_string();
            assert!(alerts.contains_key(&name), "test of unknown alert {name}");
            let exp = a["exp_alerts"].as_array().map_or(0, Vec::len);
            if exp > 0 {
                fired.insert(name);
            } else {
                quiet.insert(name);
            }
        }
        for e in t["promql_expr_test"].as_array().into_iter().flatten() {
            let expr = e["expr"].as_str().unwrap_or("");
            assert!(!expr.is_empty(), "promql_expr_test without expr");
        }
    }
    // Quiet means an evaluation that expects no alert, or a firing one
    // (promtool compares the whole list) whose input has a look-alike series
    // that no expected alert covers.
    let names: BTreeSet<String> = alerts.keys().cloned().collect();
    let unfired: Vec<_> = names.difference(&fired).collect();
    assert!(
        unfired.is_empty(),
        "alerts never tested firing: {unfired:?}"
    );
    let never_quiet: Vec<_> = names
        .iter()
        .filter(|n| !quiet.contains(*n) && !has_quiet_look_alike(&tests, n))
        .collect();
    assert!(
        never_quiet.is_empty(),
        "alerts never tested staying quiet: {never_quiet:?}"
    );
}

/// The labels that tell series apart in the tests (not `job`, `le`, ...).
const IDENTITY: [&str; 4] = ["instance", "channel", "rung", "reason"];

/// `{k="v",...}` of a promtool series string.
fn series_labels(series: &str) -> BTreeMap<String, String> {
    let inner = series
        .split_once('{')
        .and_then(|(_, l)| l.strip_suffix('}'))
        .unwrap_or("");
    inner
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// Whether a firing test of `alert` has an input series that none of the
/// expected alerts covers: a look-alike proven quiet beside the firing one.
fn has_quiet_look_alike(tests: &Value, alert: &str) -> bool {
    tests["tests"].as_array().unwrap().iter().any(|t| {
        let inputs: Vec<BTreeMap<String, String>> = t["input_series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["series"].as_str())
            .map(series_labels)
            .collect();
        t["alert_rule_test"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["alertname"] == alert)
            .filter_map(|a| a["exp_alerts"].as_array().filter(|e| !e.is_empty()))
            .any(|expected| {
                inputs.iter().any(|input| {
                    !expected.iter().any(|e| {
                        IDENTITY.iter().all(|k| match e["exp_labels"][*k].as_str() {
                            Some(v) => input.get(*k).map(String::as_str) == Some(v),
                            None => true,
                        })
                    })
                })
            })
    })
}

#[test]
fn prometheus_runbook_sections_are_in_the_readme() {
    let readme = read(&repo_root().join("README.md"));
    let headings: BTreeSet<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(str::trim)
        .collect();
    let missing: Vec<String> = alerts()
        .into_keys()
        .filter(|a| !headings.contains(a.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md has no `### <alert>` runbook section for {missing:?} (the rules' runbook_url points there)"
    );
}

/// Every expression in the rules: (where, expr), and the recorded names.
fn rule_exprs() -> (Vec<(String, String)>, BTreeSet<String>) {
    let rules = yaml_file(&deploy_prometheus("rungs.rules.yml"));
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    for g in rules["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().or(r["record"].as_str()).expect("name");
            if let Some(rec) = r["record"].as_str() {
                recorded.insert(rec.to_string());
            }
            exprs.push((
                format!("rule {name}"),
                r["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    (exprs, recorded)
}

#[test]
fn promql_scanner_finds_metric_names_and_selector_labels() {
    let names = |e: &str| -> Vec<String> {
        promql_selected(e)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert_eq!(
        names(
            r#"sum by (instance, channel) (rate(rungs_a_total{channel=~"$channel", job="x"}[$__rate_interval])) * 8"#
        ),
        ["rungs_a_total"]
    );
    assert_eq!(
        names(
            "max by (instance) (a) > on (instance) (count by (instance) (b > 0) or on (instance) 0 * c)"
        ),
        ["a", "b", "c"]
    );
    assert_eq!(
        names(r#"absent(up{job="rungs"}) or vector(1e9) unless rungs_b offset 5m"#),
        ["up", "rungs_b"]
    );
    assert_eq!(
        names(
            r#"histogram_quantile(0.9, sum(rate(h_bucket{a="rungs_not_a_metric"}[5m])) by (le))"#
        ),
        ["h_bucket"]
    );
    assert_eq!(
        promql_selected(r#"x{channel="a", rung!~"b"}"#).unwrap()[0].labels,
        ["channel", "rung"]
    );
    assert!(promql_selected(r#"{__name__="x"}"#).is_err());
    assert!(promql_selected("sum(x").is_err());
}

#[test]
fn rules_and_dashboard_read_only_exported_metrics() {
    let exported: Exported = exported_metrics();
    // The parser must see what src/metrics.rs defines, or everything passes.
    assert!(
        exported.series.len() >= 40,
        "only {} series parsed from src/metrics.rs",
        exported.series.len()
    );
    for h in [
        "rungs_ingest_to_part_seconds",
        "rungs_transcode_latency_seconds",
    ] {
        assert!(exported.histograms.contains(h), "histogram {h} not found");
        assert!(exported.series.contains(&format!("{h}_bucket")));
        assert!(!exported.series.contains(h), "{h} is no series");
    }
    assert_eq!(
        exported.labels["rungs_rung_frames_encoded_total"],
        ["channel", "rung", "backend"]
    );
    assert!(exported.labels["rungs_live_channels"].is_empty());

    let (mut exprs, recorded) = rule_exprs();
    let dash: Value = serde_json::from_str(&read(&deploy("grafana/rungs-dashboard.json")))
        .expect("dashboard JSON");
    let dash_queries = dashboard_queries(&dash);
    assert!(
        dash_queries.len() > 30,
        "{} dashboard queries",
        dash_queries.len()
    );
    exprs.extend(dash_queries);

    let mut bad = Vec::new();
    for (place, e) in &exprs {
        let selected = promql_selected(e).unwrap_or_else(|why| panic!("{place}: {why}"));
        if selected.is_empty() && !e.contains("vector(") {
            bad.push(format!("{place}: reads no metric: {e}"));
        }
        for s in selected {
            let allowed: Option<Vec<String>> = if let Some(l) = exported.labels_of(&s.name) {
                Some(l)
            } else if recorded.contains(&s.name) || SYNTHETIC_SERIES.contains(&s.name.as_str()) {
                None // any label: recorded series keep the labels they sum by
            } else {
                bad.push(format!("{place}: {} is not exported by the node", s.name));
                continue;
            };
            if let Some(allowed) = allowed {
                for l in &s.labels {
                    if !allowed.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                        bad.push(format!(
                            "{place}: {} has no label {l:?} (it has {allowed:?})",
                            s.name
                        ));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------- Grafana

#[test]
fn grafana_dashboard_is_provisionable() {
    let dash: Value = serde_json::from_str(&read(&deploy("grafana/rungs-dashboard.json")))
        .expect("dashboard JSON");
    assert_eq!(
        dash["uid"], "rungs-edge",
        "a fixed uid: links survive re-provisioning"
    );
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let var = |n: &str| {
        vars.iter()
            .find(|v| v["name"] == n)
            .unwrap_or_else(|| panic!("no ${n} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for v in ["instance", "channel", "rung"] {
        assert_eq!(var(v)["type"], "query", "${v}");
        assert_eq!(var(v)["datasource"]["uid"], "${datasource}", "${v}");
    }

    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut row = String::new();
    let mut rows = Vec::new();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "panel {:?} wider than the grid", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "panel {:?} overlaps another at ({cx},{cy})",
                    p["title"]
                );
            }
        }
        let title = p["title"].as_str().unwrap_or("").to_string();
        if p["type"] == "row" {
            row = title;
            rows.push(row.clone());
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title:?} must use the datasource variable"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let e = t["expr"].as_str().expect("expr");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            // The templated rows follow their variable.
            if row.starts_with("Channel") {
                assert!(e.contains("$channel"), "{title}: {e} ignores $channel");
            }
            if row.starts_with("Rung") {
                assert!(e.contains("$rung"), "{title}: {e} ignores $rung");
            }
            if row == "Node" || row.starts_with("Channel") || row.starts_with("Rung") {
                assert!(e.contains("$instance"), "{title}: {e} ignores $instance");
            }
        }
    }
    assert_eq!(
        rows,
        ["Fleet", "Node", "Channel $channel", "Rung $rung"],
        "rows"
    );

    let prov = yaml_file(&deploy("grafana/dashboards.yaml"));
    assert_eq!(prov["apiVersion"], 1);
    let p = &prov["providers"][0];
    assert_eq!(p["type"], "file");
    assert!(
        p["options"]["path"]
            .as_str()
            .is_some_and(|s| s.starts_with('/')),
        "provider path: {p}"
    );
}

// ---------------------------------------------------------------- Kubernetes

/// `kubectl kustomize DIR` as JSON documents.
fn kustomize(dir: &str) -> Vec<Value> {
    let kubectl = k8s_tool("kubectl");
    let o = run(
        Command::new(&kubectl).arg("kustomize").arg(deploy(dir)),
        None,
        K8S_HINT,
    );
    ok(&o, &format!("kubectl kustomize deploy/{dir}"));
    yaml_docs(&text(&o.stdout))
}

fn one_of<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}, found {}", found.len());
    found[0]
}

/// kubernetes-validate --strict (unknown fields are errors) on `docs`, for
/// each Kubernetes version the manifests claim to support.
fn validate_k8s(docs: &[Value], what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.json");
    // YAML is a superset of JSON: one JSON document per line is a stream.
    let stream: String = docs.iter().map(|d| format!("---\n{d}\n")).collect();
    fs::write(&file, stream).unwrap();
    let o = run(
        Command::new(k8s_tool("venv/bin/kubernetes-validate"))
            .args(["--strict", "-k", "1.30.0", "-k", "1.37.0"])
            .arg(&file),
        None,
        K8S_HINT,
    );
    let out = format!("{}{}", text(&o.stdout), text(&o.stderr));
    ok(&o, &format!("kubernetes-validate {what}"));
    // The only kind without a core schema is the PodMonitor (checked below).
    for l in out.lines().filter(|l| l.starts_with("WARN")) {
        assert!(l.contains("kind PodMonitor"), "{what}: {l}");
    }
    let passed = out.lines().filter(|l| l.contains(" passed for ")).count();
    let core = docs.iter().filter(|d| d["kind"] != "PodMonitor").count();
    assert_eq!(
        passed,
        core * 2,
        "{what}: every core object, two versions:\n{out}"
    );
}

/// The PodMonitor against the prometheus-operator's own types (npm
/// @kubernetes-models/prometheus-operator: its CRD's schema, compiled).
fn validate_podmonitor(pm: &Value) {
    let npm = k8s_tool("npm");
    let script = r#"
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { readFileSync } from "node:fs";
new PodMonitor(JSON.parse(readFileSync(0, "utf8"))).validate();
console.log("valid");
"#;
    let o = run(
        Command::new("node")
            .args(["--input-type=module", "-e", script])
            .current_dir(&npm),
        Some(pm.to_string().as_bytes()),
        "node (Node.js) is needed",
    );
    ok(&o, "PodMonitor validation");
    assert_eq!(text(&o.stdout).trim(), "valid");

    // The validator does not refuse unknown fields: a wrong type it does.
    let mut broken = pm.clone();
    broken["spec"]["podMetricsEndpoints"][0]["port"] = serde_json::json!(8081);
    let o = run(
        Command::new("node")
            .args(["--input-type=module", "-e", script])
            .current_dir(&npm),
        Some(broken.to_string().as_bytes()),
        "node",
    );
    assert!(
        !o.status.success(),
        "the PodMonitor validator took a numeric port name: it checks nothing"
    );
}

fn env_of(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

fn port_named<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// Whether `selector` (matchLabels, or a Service's plain map) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let m = selector
        .get("matchLabels")
        .unwrap_or(selector)
        .as_object()
        .expect("selector labels");
    !m.is_empty() && m.iter().all(|(k, v)| labels[k] == *v)
}

#[test]
fn k8s_base_renders_validates_and_fits_together() {
    let docs = kustomize("k8s/base");
    validate_k8s(&docs, "deploy/k8s/base");
    let ds = one_of(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    let cfg = k8s_config();

    // Ports on the machine itself (daemonset.yaml says why), as the node binds them.
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    for (name, port, proto) in [
        ("rtmp", 1935, "TCP"),
        ("http", 8080, "TCP"),
        ("whip-media", 8189, "UDP"),
        ("admin", 8081, "TCP"),
    ] {
        let p = port_named(c, name);
        assert_eq!(p["containerPort"], port, "{name}");
        assert_eq!(p["protocol"], proto, "{name}");
    }

    // Probes: liveness is health, readiness is "takes publishers".
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let port = &c[probe]["httpGet"]["port"];
        assert_eq!(port_named(c, port.as_str().unwrap())["containerPort"], 8080);
    }

    // Drain: SIGTERM drains; preStop must not, and the grace period covers
    // preStop, the whole deadline and a margin.
    let pre = &c["lifecycle"]["preStop"];
    let pre_s = pre["sleep"]["seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("preStop is a plain sleep: {pre}"));
    let grace = spec["terminationGracePeriodSeconds"].as_f64().unwrap();
    let deadline = drain_deadline_s();
    assert!(
        grace >= pre_s + deadline + 10.0,
        "terminationGracePeriodSeconds {grace} < preStop {pre_s} + drain deadline {deadline} + 10"
    );

    // Non-root, read-only root, nothing to escalate to.
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert!(spec["securityContext"]["runAsUser"].as_u64().unwrap() > 0);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));

    // Config: the generated ConfigMap (hashed name) mounted where --config reads.
    let cm = one_of(&docs, "ConfigMap");
    let cm_name = cm["metadata"]["name"].as_str().unwrap();
    assert!(
        cm["data"]["rungs.toml"].is_string(),
        "ConfigMap key rungs.toml"
    );
    let vol = |name: &str| {
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    let mount = |path: &str| {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
            .clone()
    };
    let cfg_mount = mount("/etc/rungs");
    assert_eq!(
        vol(cfg_mount["name"].as_str().unwrap())["configMap"]["name"],
        cm_name
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["serve", "--config", "/etc/rungs/rungs.toml"]);
    // The data dir the config names is a writable volume (the root is not).
    let data_dir = cfg["data_dir"]
        .as_str()
        .expect("data_dir in the k8s config");
    let data = mount(data_dir);
    assert!(data["readOnly"].is_null() || data["readOnly"] == false);
    assert!(vol(data["name"].as_str().unwrap())["emptyDir"].is_object());
    mount("/tmp");

    // Secrets and per-node values from the environment.
    let env = env_of(c);
    let get = |n: &str| {
        env.iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("no env {n}"))
            .1
            .clone()
    };
    let token = &get("RUNGS_API__ADMIN_TOKEN")["valueFrom"]["secretKeyRef"];
    assert_eq!(token["name"], "rungs");
    assert_eq!(token["key"], "admin-token");
    assert!(token["optional"].is_null() || token["optional"] == false);
    let reg = &get("RUNGS_REGISTRY__URL")["valueFrom"]["secretKeyRef"];
    assert_eq!(reg["name"], "rungs");
    assert_eq!(reg["key"], "registry-url");
    assert_eq!(
        get("RUNGS_NODE__ID")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    // $(HOST_IP) expands only from a variable defined earlier in the list.
    let pos = |n: &str| env.iter().position(|(k, _)| k == n).unwrap();
    assert_eq!(get("RUNGS_ADMIN_ADDR")["value"], "$(HOST_IP):8081");
    assert!(pos("HOST_IP") < pos("RUNGS_ADMIN_ADDR"));
    // The example Secret has exactly the keys the pods read.
    let example = yaml_file(&deploy("k8s/base/secret.example.yaml"));
    validate_k8s(std::slice::from_ref(&example), "secret.example.yaml");
    let keys: BTreeSet<&str> = example["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["admin-token", "registry-url"]));

    // GPU: one device, GPU machines only, the GPU required.
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert!(
        spec["nodeSelector"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(
        spec["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "nvidia.com/gpu")
    );
    assert_eq!(get("RUNGS_GPU__ENABLED")["value"], "on");
    assert!(
        get("NVIDIA_DRIVER_CAPABILITIES")["value"]
            .as_str()
            .unwrap()
            .contains("video")
    );

    // Scraping: annotations and the PodMonitor name the admin port; its job
    // is "rungs", which the alerts and the dashboard select.
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(
        ann["prometheus.io/port"],
        port_named(c, "admin")["containerPort"].to_string()
    );
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    let pm = one_of(&docs, "PodMonitor");
    validate_podmonitor(pm);
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(selects(&pm["spec"]["selector"], labels));
    let ep = &pm["spec"]["podMetricsEndpoints"][0];
    port_named(c, ep["port"].as_str().unwrap());
    assert_eq!(ep["port"], "admin");
    assert_eq!(ep["path"], "/metrics");
    let job_label = pm["spec"]["jobLabel"].as_str().expect("jobLabel");
    assert_eq!(labels[job_label], "rungs", "the job name alerts select");
    let static_cfg = yaml_file(&deploy_prometheus("prometheus.yml"));
    assert_eq!(static_cfg["scrape_configs"][0]["job_name"], "rungs");

    // Service: TCP ports that exist on the pod; WHIP media never through it.
    let svc = one_of(&docs, "Service");
    assert!(selects(&svc["spec"]["selector"], labels));
    let mut svc_ports = BTreeSet::new();
    for p in svc["spec"]["ports"].as_array().unwrap() {
        assert_eq!(p["protocol"], "TCP", "{p}");
        let target = port_named(c, p["targetPort"].as_str().expect("named targetPort"));
        assert_eq!(target["protocol"], "TCP");
        svc_ports.insert(p["name"].as_str().unwrap().to_string());
    }
    assert_eq!(svc_ports, BTreeSet::from(["http".into(), "rtmp".into()]));

    let pdb = one_of(&docs, "PodDisruptionBudget");
    assert!(selects(&pdb["spec"]["selector"], labels));
    assert!(selects(&ds["spec"]["selector"], labels));
    // Everything in one namespace, which the base creates.
    let ns = one_of(&docs, "Namespace")["metadata"]["name"].clone();
    for d in docs.iter().filter(|d| d["kind"] != "Namespace") {
        assert_eq!(d["metadata"]["namespace"], ns, "{}", d["kind"]);
    }
}

#[test]
fn k8s_cpu_overlay_differs_only_by_the_gpu() {
    let base = kustomize("k8s/base");
    let cpu = kustomize("k8s/overlays/cpu");
    validate_k8s(&cpu, "deploy/k8s/overlays/cpu");
    let ids = |docs: &[Value]| -> BTreeSet<String> {
        docs.iter()
            .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
            .collect()
    };
    assert_eq!(ids(&base), ids(&cpu), "the overlay keeps every object");
    for d in &cpu {
        if d["kind"] != "DaemonSet" {
            let b = base
                .iter()
                .find(|b| b["kind"] == d["kind"] && b["metadata"]["name"] == d["metadata"]["name"])
                .unwrap();
            assert_eq!(b, d, "the overlay changed {}", d["kind"]);
        }
    }

    // The base DaemonSet less its GPU parts is the overlay's.
    let mut want = one_of(&base, "DaemonSet").clone();
    let got = one_of(&cpu, "DaemonSet").clone();
    let spec = want["spec"]["template"]["spec"].as_object_mut().unwrap();
    assert!(spec.remove("nodeSelector").is_some());
    assert!(spec.remove("tolerations").is_some());
    let c = &mut spec.get_mut("containers").unwrap()[0];
    assert!(
        c["resources"]["limits"]
            .as_object_mut()
            .unwrap()
            .remove("nvidia.com/gpu")
            .is_some()
    );
    let env = c["env"].as_array_mut().unwrap();
    env.retain(|e| e["name"] != "NVIDIA_DRIVER_CAPABILITIES");
    for e in env.iter_mut() {
        if e["name"] == "RUNGS_GPU__ENABLED" {
            e["value"] = "off".into();
        }
    }
    // A strategic merge may reorder env; the order matters only for $(VAR).
    let sorted = |mut d: Value| {
        let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap();
        env.sort_by_key(|e| e["name"].as_str().unwrap().to_string());
        d
    };
    assert_eq!(sorted(want), sorted(got.clone()), "cpu overlay DaemonSet");
    let env = env_of(&got["spec"]["template"]["spec"]["containers"][0]);
    let pos = |n: &str| env.iter().position(|(k, _)| k == n).unwrap();
    assert!(pos("HOST_IP") < pos("RUNGS_ADMIN_ADDR"));
}

#[test]
fn k8s_config_is_one_the_node_accepts() {
    // `channel list` loads and checks the whole config before it reads the
    // registry: a field the node does not know, or a bad value, fails it.
    let dir = tempfile::tempdir().unwrap();
    let check = |cfg: &Path| {
        run(
            Command::new(node_bin())
                .args(["channel", "list", "--json", "--config"])
                .arg(cfg)
                .arg("--data-dir")
                .arg(dir.path()),
            None,
            "the node binary (cargo builds it for the tests)",
        )
    };
    let o = check(&deploy("k8s/base/rungs.toml"));
    ok(&o, "rungs channel list --config deploy/k8s/base/rungs.toml");
    assert_eq!(text(&o.stdout).trim(), "[]");
    // The same check refuses a config with a field the node does not know.
    let bad = dir.path().join("bad.toml");
    fs::write(
        &bad,
        read(&deploy("k8s/base/rungs.toml")) + "\n[no_such_section]\nx = 1\n",
    )
    .unwrap();
    assert!(!check(&bad).status.success(), "a bad config was accepted");
}
