//! Configuration as an operator meets it, through the real binary: `rungs
//! config check` prints what `serve` would run with (file and `RUNGS_*`
//! variables) without a secret, and exits 78 on a bad configuration, as
//! `serve` does; `[log] format = "json"` makes every line of a running
//! node a JSON object, those of a channel's thread with its channel and
//! stream session.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `rungs ARGS` with `vars` as its only `RUNGS_*` variables.
fn rungs(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(node_bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RUNGS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(vars.iter().copied());
    cmd.output().expect("run rungs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.to_string_lossy().into_owned()
}

#[test]
fn check_prints_the_effective_config_without_secrets_and_it_loads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        dir.path(),
        "rungs.toml",
        "public_url = \"https://edge.example/tv\"\n\
         [api]\nadmin_token = \"at_FILESECRET_0123456789\"\n\
         [hls]\npart_target_s = 0.25\n",
    );
    let out = rungs(
        &["config", "check", "--config", &cfg],
        &[
            ("RUNGS_HLS__SEGMENT_TARGET_S", "3"),
            ("RUNGS_NODE__REGION", "eu-west"),
            ("RUNGS_RECORDING__S3_SECRET_ACCESS_KEY", "ENVSECRET/1"),
            ("RUNGS_RECORDING__S3_ACCESS_KEY_ID", "AKIAENVSECRET2"),
            (
                "RUNGS_REGISTRY__URL",
                "postgres://rungs:DBSECRET@db.example/rungs",
            ),
            (
                "RUNGS_HOOKS__PLAY_URL",
                "https://backend.example/play?token=HOOKSECRET",
            ),
            ("RUNGS_SOAK_MINUTES", "5"),
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    for secret in ["FILESECRET", "ENVSECRET", "DBSECRET", "HOOKSECRET"] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
        assert!(!stderr.contains(secret), "{secret} on stderr:\n{stderr}");
    }
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with('#')
            && first.contains(&cfg)
            && first.contains("RUNGS_HLS__SEGMENT_TARGET_S"),
        "{first}"
    );
    assert!(!first.contains("RUNGS_SOAK_MINUTES"), "{first}");
    assert!(stdout.contains("part_target_s = 0.25"), "{stdout}");
    assert!(stdout.contains("segment_target_s = 3.0"), "{stdout}");
    assert!(stdout.contains("region = \"eu-west\""), "{stdout}");
    assert!(stdout.contains("admin_token = \"<redacted>\""), "{stdout}");

    // Without the secrets, what is printed is a config file that prints the same.
    let out = rungs(
        &["config", "check"],
        &[("RUNGS_CONFIG", &cfg), ("RUNGS_WHIP__MAX_SESSIONS", "9")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.lines().next().unwrap_or_default().contains(&cfg),
        "{printed}"
    );
    let without_token: String = printed
        .lines()
        .filter(|l| !l.starts_with("admin_token"))
        .map(|l| format!("{l}\n"))
        .collect();
    let again = write(dir.path(), "printed.toml", &without_token);
    let out = rungs(&["config", "check", "--config", &again], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reprinted: String = text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    let expected: String = without_token
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(reprinted, expected);
}

/// A command's arguments, its `RUNGS_*` variables, and what its error
/// must name.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn a_bad_config_exits_78_naming_the_file_or_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write(dir.path(), "bad.toml", "[hls]\npart_target_s = 5.0\n");
    let good = write(dir.path(), "good.toml", "");
    let cases: [Case; 6] = [
        (&["config", "check", "--config", &bad], &[], "bad.toml"),
        (
            &["config", "check", "--config", &good],
            &[("RUNGS_HLS__NO_SUCH", "1")],
            "RUNGS_HLS__NO_SUCH",
        ),
        (
            &["config", "check", "--config", &good],
            &[("RUNGS_HTTP_ADDR", "nowhere")],
            "RUNGS_HTTP_ADDR",
        ),
        (
            &["config", "check"],
            &[("RUNGS_CONFIG", "/nonexistent/rungs.toml")],
            "/nonexistent/rungs.toml",
        ),
        (
            &["config", "check", "--config", &good],
            &[("RUNGS_TLS__CERT", "/nonexistent/cert.pem")],
            "tls",
        ),
        (
            &["config", "check", "--config", &good],
            &[("RUNGS_API__ADMIN_TOKEN", "SHORTSECRET")],
            "api.admin_token",
        ),
    ];
    for (args, vars, named) in cases {
        let out = rungs(args, vars);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?} {vars:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} {vars:?} should name {named}: {stderr}"
        );
        assert!(!stderr.contains("SHORTSECRET"), "{stderr}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    }
}

#[test]
fn serve_exits_78_on_a_config_error_and_1_on_any_other_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_string_lossy().into_owned();
    let out = rungs(
        &["serve", "--data-dir", &data],
        &[("RUNGS_HLS__PART_TARGET_S", "5")],
    );
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("RUNGS_HLS__PART_TARGET_S"));

    // A port already taken is not the config's fault: 1, and restarted.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = rungs(
        &[
            "serve",
            "--data-dir",
            &data,
            "--rtmp-addr",
            &format!("127.0.0.1:{port}"),
            "--http-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port()),
        ],
        &[("RUNGS_WHIP__UDP_ADDR", "127.0.0.1:0")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn json_logs_are_one_object_a_line_and_a_channel_s_carry_its_session() {
    let _turn = take_turn();
    let node = Node::start(NodeConfig {
        extra_toml: "[log]\nformat = \"json\"\n",
        reconnect_grace_s: 0.5,
        ..NodeConfig::default()
    });
    let ch = node.create_channel("json-logs");
    let mut publisher = node.publish_live(&ch, 1);
    publisher.stop();
    let ended = Instant::now() + Duration::from_secs(30);
    while !node.log().contains("\"message\":\"stream ended\"") {
        assert!(
            Instant::now() < ended,
            "no stream end logged:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = node.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for l in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(l[key].is_string(), "{key} missing: {l}");
        }
    }
    let starting = lines
        .iter()
        .find(|l| l["message"] == "rungs starting")
        .expect("a start line");
    assert!(
        starting["config"]
            .as_str()
            .unwrap_or_default()
            .contains("e2e-config.toml"),
        "{starting}"
    );
    let sessions: serde_json::Value =
        serde_json::from_str(node.cli(&["channel", "sessions", &ch.id, "--json"]).trim())
            .expect("sessions JSON");
    let session = &sessions["sessions"][0]["id"];
    assert!(session.is_i64(), "{sessions}");
    let end = lines
        .iter()
        .find(|l| l["message"] == "stream ended")
        .expect("the end line");
    assert_eq!(end["target"], "rungs::hub::core", "{end}");
    assert_eq!(end["channel"], ch.id.as_str(), "{end}");
    assert_eq!(&end["session"], session, "{end}");
    // Every line of the channel's thread, not only the end.
    for l in lines.iter().filter(|l| {
        l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("rungs::hub::core"))
    }) {
        assert_eq!(l["channel"], ch.id.as_str(), "{l}");
        assert!(l.get("session").is_some(), "{l}");
    }
}
