//! `deploy/rungs.service`: what the node's supervision relies on, and
//! `systemd-analyze verify` and `security` on it.

use super::*;

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
