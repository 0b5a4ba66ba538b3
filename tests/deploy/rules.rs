//! `deploy/prometheus`: promtool on the rules and config, every alert tested
//! firing and quiet with a runbook, and every expression reading only what
//! the node exports.

use super::*;

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
