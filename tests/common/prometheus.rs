//! Prometheus around the node: which metrics it exports (read from
//! `src/metrics.rs`, the one place they are defined), which metrics a PromQL
//! expression reads, and a real `prometheus` server (Debian's package) on a
//! free loopback port, scraping a node and loading `deploy/prometheus`'s
//! rules. The server is killed on Drop; its log is printed when a test panics.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::Http;
use super::{free_port, repo_root, tail};

/// Series every Prometheus makes itself, which expressions may read too.
pub const SYNTHETIC_SERIES: [&str; 2] = ["up", "ALERTS"];

/// Labels a scrape adds to every series of a target (`node` and `pop` come
/// from deploy/prometheus/prometheus.yml and the PodMonitor's relabeling).
pub const TARGET_LABELS: [&str; 4] = ["job", "instance", "node", "pop"];

/// The metrics the node exports, as `src/metrics.rs` defines them.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Series names a query can read: every counter and gauge, and each
    /// histogram's `_bucket`, `_sum` and `_count` (not its bare name).
    pub series: BTreeSet<String>,
    pub histograms: BTreeSet<String>,
    /// Each metric's labels (a histogram's series add `le` to `_bucket`).
    pub labels: BTreeMap<String, Vec<String>>,
}

impl Exported {
    /// The labels series `name` may be selected by.
    pub fn labels_of(&self, name: &str) -> Option<Vec<String>> {
        if let Some(l) = self.labels.get(name)
            && !self.histograms.contains(name)
        {
            return Some(l.clone());
        }
        for h in &self.histograms {
            for (suffix, le) in [("_bucket", true), ("_sum", false), ("_count", false)] {
                if name.strip_suffix(suffix) == Some(h.as_str()) {
                    let mut l = self.labels[h].clone();
                    if le {
                        l.push("le".into());
                    }
                    return Some(l);
                }
            }
        }
        None
    }
}

/// Reads `src/metrics.rs`: every `"rungs_..."` string literal is a metric
/// name (the help texts never are one word); the `&[...]` after it, before
/// the next name, its labels; the name right after `HistogramOpts::new(` a
/// histogram.
pub fn exported_metrics() -> Exported {
    let path = repo_root().join("src/metrics.rs");
    let src = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Only the definitions: what follows is code that removes series.
    let defs = match src.find("let collectors") {
        Some(end) => &src[..end],
        None => panic!(
            "{}: no `let collectors` (the end of the definitions): the parser here must follow",
            path.display()
        ),
    };
    let literals = string_literals(defs);
    let names: Vec<(usize, String)> = literals
        .iter()
        .filter(|(_, s)| {
            s.starts_with("rungs_")
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .cloned()
        .collect();
    let mut labels = BTreeMap::new();
    for (k, (at, name)) in names.iter().enumerate() {
        let end = names.get(k + 1).map_or(defs.len(), |(n, _)| *n);
        let seg = &defs[*at..end];
        let l = match seg.find("&[") {
            Some(open) => {
                let close = open
                    + seg[open..]
                        .find(']')
                        .unwrap_or_else(|| panic!("metric {name}: `&[` without `]`"));
                string_literals(&seg[open..close])
                    .into_iter()
                    .map(|(_, s)| s)
                    .collect()
            }
            None => Vec::new(),
        };
        assert!(
            labels.insert(name.clone(), l).is_none(),
            "metric {name} is defined twice in src/metrics.rs"
        );
    }
    let histograms: BTreeSet<String> = defs
        .match_indices("HistogramOpts::new(")
        .map(|(i, _)| {
            string_literals(&defs[i..])
                .into_iter()
                .next()
                .map(|(_, s)| s)
                .expect("HistogramOpts::new(\"name\", ...)")
        })
        .collect();
    let mut series = BTreeSet::new();
    for name in labels.keys() {
        if histograms.contains(name) {
            for suffix in ["_bucket", "_sum", "_count"] {
                series.insert(format!("{name}{suffix}"));
            }
        } else {
            series.insert(name.clone());
        }
    }
    Exported {
        series,
        histograms,
        labels,
    }
}

/// Rust string literals in `src` with their byte offsets (no raw strings;
/// `\"` inside is kept as is).
fn string_literals(src: &str) -> Vec<(usize, String)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                out.push((start - 1, src[start..i.min(b.len())].to_string()));
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// A series a PromQL expression reads, with the labels its selector names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub name: String,
    pub labels: Vec<String>,
}

/// The metric names an expression reads and the labels it matches them on.
/// A small scanner, not a parser: it skips strings, `[range]`s, numbers and
/// durations, Grafana `$variables`, function names (an identifier before
/// `(`), keywords, and the label lists after `by`/`without`/`on`/`ignoring`/
/// `group_left`/`group_right`. What is left are metric names. A selector
/// with no name (`{__name__=...}`) is refused: nothing could be checked.
pub fn promql_selected(expr: &str) -> Result<Vec<Selected>, String> {
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: [&str; 19] = [
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "inf",
        "nan",
    ];
    let b = expr.as_bytes();
    let mut out: Vec<Selected> = Vec::new();
    let mut i = 0;
    let mut paren = 0usize;
    let mut label_list: Option<usize> = None;
    let mut grouping_next = false;
    // The selector `{...}` being read: the index in `out` it belongs to.
    let mut in_braces: Option<Option<usize>> = None;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if i >= b.len() {
                    return Err(format!("unterminated string in {expr:?}"));
                }
                i += 1;
            }
            b'{' => {
                if in_braces.is_some() {
                    return Err(format!("nested braces in {expr:?}"));
                }
                // Directly after a name: that name's selector.
                let owner = out.len().checked_sub(1).filter(|_| {
                    let before = expr[..i].trim_end();
                    before.ends_with(out.last().map_or("\u{0}", |s| s.name.as_str()))
                });
                if owner.is_none() {
                    return Err(format!("a selector without a metric name in {expr:?}"));
                }
                in_braces = Some(owner);
                i += 1;
            }
            b'}' => {
                in_braces = None;
                i += 1;
            }
            b'[' => {
                i += expr[i..]
                    .find(']')
                    .ok_or_else(|| format!("unterminated [ in {expr:?}"))?
                    + 1;
            }
            b'(' => {
                paren += 1;
                if grouping_next {
                    label_list = Some(paren);
                }
                grouping_next = false;
                i += 1;
            }
            b')' => {
                if label_list == Some(paren) {
                    label_list = None;
                }
                paren = paren
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ) in {expr:?}"))?;
                i += 1;
            }
            b'$' => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let ident = &expr[start..i];
                if let Some(owner) = in_braces {
                    if let Some(k) = owner {
                        out[k].labels.push(ident.to_string());
                    }
                    // Skip the operator and the quoted value that follow.
                    continue;
                }
                if label_list.is_some() {
                    continue;
                }
                let lower = ident.to_ascii_lowercase();
                if GROUPING.contains(&lower.as_str()) {
                    grouping_next = true;
                    continue;
                }
                grouping_next = false;
                if KEYWORDS.contains(&lower.as_str()) {
                    continue;
                }
                if expr[i..].trim_start().starts_with('(') {
                    continue; // a function
                }
                out.push(Selected {
                    name: ident.to_string(),
                    labels: Vec::new(),
                });
            }
            _ => {
                if in_braces.is_none() {
                    grouping_next = false;
                }
                i += 1;
            }
        }
    }
    if paren != 0 || in_braces.is_some() {
        return Err(format!("unbalanced brackets in {expr:?}"));
    }
    Ok(out)
}

/// Every query of a Grafana dashboard: panel targets (`where` = the panel's
/// title) and templating queries; `label_values(SELECTOR, label)` gives its
/// selector.
pub fn dashboard_queries(dash: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn panels<'a>(v: &'a serde_json::Value, acc: &mut Vec<&'a serde_json::Value>) {
        for p in v.as_array().into_iter().flatten() {
            acc.push(p);
            panels(&p["panels"], acc);
        }
    }
    let mut all = Vec::new();
    panels(&dash["panels"], &mut all);
    for p in all {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("panel {:?}", p["title"]), e.to_string()));
            }
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_else(|| panic!("variable {} has no query: {v}", v["name"]));
        let sel = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.rsplit_once(','))
            .map_or(q, |(s, _)| s);
        out.push((format!("variable {}", v["name"]), sel.trim().to_string()));
    }
    out
}

/// Grafana's variables as a query on a plain Prometheus can take them.
pub fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "5m")
        .replace("$instance", ".*")
        .replace("$channel", ".*")
        .replace("$rung", ".*")
}

/// Path of a Prometheus tool (`prometheus`, `promtool`); panics with what to
/// install when it is missing.
pub fn prometheus_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not on PATH: install Debian's `prometheus` package (apt-get install prometheus), or run `make test`"
        )
    })
}

/// A `prometheus` server on a free loopback port with its own storage,
/// scraping `target` (host:port of a node's admin listener) every second
/// as job "rungs" and evaluating `rule_files` every second.
pub struct PromServer {
    child: Option<Child>,
    pub port: u16,
    pub log_path: PathBuf,
    http: Http,
    _dir: tempfile::TempDir,
}

impl PromServer {
    pub fn start(target: &str, rule_files: &[PathBuf]) -> PromServer {
        let bin = prometheus_tool("prometheus");
        let rules: String = rule_files
            .iter()
            .map(|p| format!("  - {:?}\n", p.display().to_string()))
            .collect();
        // scrape_timeout may not exceed the interval.
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n{rules}scrape_configs:\n  - job_name: rungs\n    static_configs:\n      - targets: [{target:?}]\n"
        );
        // A free port can be taken between the probe and the bind: one retry.
        for attempt in 0..2 {
            let dir = tempfile::Builder::new()
                .prefix("rungs-prometheus-")
                .tempdir()
                .expect("temp dir");
            let config_path = dir.path().join("prometheus.yml");
            fs::write(&config_path, &config).unwrap();
            let port = free_port();
            let log_path = dir.path().join("prometheus.log");
            let log = File::create(&log_path).unwrap();
            let child = Command::new(&bin)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut s = PromServer {
                child: Some(child),
                port,
                log_path,
                http: Http::with_timeout(Duration::from_secs(5)),
                _dir: dir,
            };
            match s.wait_ready(Duration::from_secs(15)) {
                Ok(()) => return s,
                // Dropping `s` kills it; the next attempt takes a new port.
                Err(why) if attempt == 0 && why.contains("address already in use") => {}
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the second attempt returns or panics")
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let end = Instant::now() + limit;
        let url = self.url("/-/ready");
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "prometheus exited before it was ready ({st}); log:\n{}",
                    tail(&self.log_path, 40)
                ));
            }
            if self.http.try_get(&url).is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!(
                    "prometheus not ready within {limit:?}; log:\n{}",
                    tail(&self.log_path, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET /api/v1/query`: the result array of an instant query, or the
    /// server's error (a parse error is an answer, not a panic).
    pub fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let url = url::Url::parse_with_params(&self.url("/api/v1/query"), [("query", expr)])
            .expect("a valid URL");
        let r = self
            .http
            .try_get(url.as_str())
            .map_err(|e| format!("query {expr:?}: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("query {expr:?}: {e}: {}", r.text()))?;
        if v["status"] != "success" {
            return Err(format!("query {expr:?}: HTTP {}: {v}", r.status));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /api/v1/rules`: every rule group loaded.
    pub fn rules(&self) -> serde_json::Value {
        let r = self.http.get(&self.url("/api/v1/rules"));
        assert_eq!(r.status, 200, "GET /api/v1/rules: {}", r.text());
        r.json()["data"]["groups"].clone()
    }
}

fn kill(s: &mut PromServer) {
    if let Some(mut c) = s.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        kill(self);
        if std::thread::panicking() {
            eprintln!(
                "===== prometheus log ({}), last 40 lines =====\n{}",
                self.log_path.display(),
                tail(&self.log_path, 40)
            );
        }
    }
}

/// The value of an instant-query sample (`[time, "value"]`).
pub fn sample_value(s: &serde_json::Value) -> f64 {
    s["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `deploy/prometheus/<name>`.
pub fn deploy_prometheus(name: &str) -> PathBuf {
    repo_root().join("deploy/prometheus").join(name)
}
