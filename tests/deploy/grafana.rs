//! `deploy/grafana`: the dashboard and its provisioning file.

use super::*;

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
