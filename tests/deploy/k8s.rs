//! `deploy/k8s`: the kustomize base and the cpu overlay, rendered, validated
//! against the Kubernetes schemas, and checked against each other and the node.

use super::*;

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
