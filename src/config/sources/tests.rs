use super::*;
use crate::config::REDACTED;
use std::time::Duration;

fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    list.iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

fn env_only(list: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    Config::load_with_env(None, vars(list))
}

fn file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let p = dir.path().join("rungs.toml");
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn variables_set_fields_typed_as_the_fields_are() {
    let l = env_only(&[
        ("RUNGS_PUBLIC_URL", "https://edge.example/tv"),
        ("RUNGS_HTTP_ADDR", "127.0.0.1:9080"),
        ("RUNGS_HLS__PART_TARGET_S", "0.3"),
        ("RUNGS_HLS__SEGMENT_TARGET_S", "4"),
        ("RUNGS_INGEST__LIMITS__MAX_WIDTH", "1920"),
        ("RUNGS_HTTP__ADMIN_ON_PLAYER_PORT", "true"),
        ("RUNGS_WHIP__IPS", r#"["192.0.2.7", "2001:db8::7"]"#),
        ("RUNGS_GPU__ENABLED", "off"),
        ("RUNGS_LOG__FORMAT", "json"),
        // Text fields take digits and words as text.
        ("RUNGS_NODE__ID", "7"),
        ("RUNGS_NODE__REGION", "true"),
        ("RUNGS_API__ADMIN_TOKEN", "1234567890123456"),
        (
            "RUNGS_TRANSCODE__LADDERS__MOBILE",
            r#"[{ name = "540p", height = 540, bitrate_kbps = 1500 }]"#,
        ),
        ("RUNGS_TRANSCODE__DEFAULT_LADDER", "mobile"),
    ])
    .expect("load");
    let c = &l.config;
    assert_eq!(c.http_base_url(), "https://edge.example/tv");
    assert_eq!(c.http_addr, "127.0.0.1:9080".parse().unwrap());
    assert_eq!(c.hls.part_target, Duration::from_millis(300));
    assert_eq!(c.hls.segment_target, Duration::from_secs(4));
    assert_eq!(c.ingest.limits.max_width, 1920);
    assert_eq!(
        c.ingest.limits.max_height, 4096,
        "the rest keeps its default"
    );
    assert!(c.http.admin_on_player_port);
    assert_eq!(c.whip.ips.len(), 2);
    assert_eq!(c.gpu.enabled, crate::gpu::GpuMode::Off);
    assert_eq!(c.log.format, crate::config::LogFormat::Json);
    assert_eq!(c.node.id, "7");
    assert_eq!(c.node.region, "true");
    assert_eq!(c.api.admin_token.as_deref(), Some("1234567890123456"));
    assert!(c.ladders().expect("ladders").contains("mobile"));
    assert!(l.file.is_none());
    assert_eq!(l.overrides.len(), 14);
    assert!(
        l.overrides
            .iter()
            .any(|o| o.var == "RUNGS_INGEST__LIMITS__MAX_WIDTH"
                && o.key == "ingest.limits.max_width")
    );
    assert!(
        l.describe().starts_with("built-in defaults with RUNGS_"),
        "{}",
        l.describe()
    );
}

#[test]
fn only_variables_naming_a_field_apply() {
    let l = env_only(&[
        ("RUNGS_SOAK_MINUTES", "5"),
        ("RUNGS_GPU_FRAMES", "100"),
        ("RUNGS_E2E_KEEP", "1"),
        ("RUNGS_DEVICE_BUNDLE", "/x"),
        ("RUNGS_CONFIG", "/etc/rungs/other.toml"),
        ("RUNGS_BENCH_SECONDS", "3"),
        ("HLS__PART_TARGET_S", "0.5"),
        ("PATH", "/usr/bin"),
    ])
    .expect("none of these is an override");
    assert!(l.overrides.is_empty());
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(
        format!("{:?}", l.config),
        format!("{:?}", Config::default())
    );
}

#[test]
fn a_single_underscore_between_section_and_field_is_ignored_with_a_warning() {
    let l = env_only(&[("RUNGS_HLS_PART_TARGET_S", "0.5")]).expect("load");
    assert!(l.overrides.is_empty());
    assert_eq!(l.config.hls.part_target, Duration::from_millis(200));
    assert_eq!(l.warnings.len(), 1);
    assert!(
        l.warnings[0].contains("RUNGS_HLS__PART_TARGET_S"),
        "{:?}",
        l.warnings
    );
}

#[test]
fn a_wrong_variable_is_named_in_the_error() {
    let err = |list: &[(&str, &str)]| env_only(list).expect_err("invalid").to_string();
    let e = err(&[("RUNGS_HLS__PART_TARGET_SECONDS", "0.5")]);
    assert!(
        e.contains("RUNGS_HLS__PART_TARGET_SECONDS") && e.contains("part_target_seconds"),
        "{e}"
    );
    let e = err(&[("RUNGS_HLS__PART_TARGET_S", "fast")]);
    assert!(
        e.contains("RUNGS_HLS__PART_TARGET_S") && e.contains("f64"),
        "{e}"
    );
    let e = err(&[("RUNGS_HTTP_ADDR", "not-an-address")]);
    assert!(e.contains("RUNGS_HTTP_ADDR"), "{e}");
    let e = err(&[("RUNGS_HTTP__MAX_CONNECTIONS", "-1")]);
    assert!(e.contains("RUNGS_HTTP__MAX_CONNECTIONS"), "{e}");
    let e = err(&[("RUNGS_GPU__ENABLED", "sometimes")]);
    assert!(
        e.contains("RUNGS_GPU__ENABLED") && e.contains("sometimes"),
        "{e}"
    );
    let e = err(&[("RUNGS_INGEST__LIMITS___MAX_WIDTH", "1")]);
    assert!(e.contains("RUNGS_INGEST__LIMITS___MAX_WIDTH"), "{e}");
    // Valid alone, wrong against the rest: the variable is named too.
    let e = err(&[("RUNGS_HLS__PART_TARGET_S", "1.5")]);
    assert!(e.contains("RUNGS_HLS__PART_TARGET_S"), "{e}");
    let e = err(&[
        ("RUNGS_HLS__PART_TARGET_S", "0.3"),
        ("RUNGS_hls__part_target_s", "0.4"),
    ]);
    assert!(
        e.contains("RUNGS_hls__part_target_s") && e.contains("as RUNGS_HLS__PART_TARGET_S"),
        "{e}"
    );
    let e = err(&[(
        "RUNGS_TRANSCODE__LADDERS__MOBILE",
        "[{ name = \"source\", height = 1, bitrate_kbps = 1 }]",
    )]);
    assert!(e.contains("RUNGS_TRANSCODE__LADDERS__MOBILE"), "{e}");
}

#[test]
fn a_value_cannot_smuggle_other_keys() {
    let e = env_only(&[("RUNGS_HLS__PLAYLIST_SEGMENTS", "20\nsegment_target_s = 9")])
        .expect_err("not one value")
        .to_string();
    assert!(e.contains("RUNGS_HLS__PLAYLIST_SEGMENTS"), "{e}");
}

#[test]
fn variables_go_over_the_file_and_merge_with_its_sections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = file(
        &dir,
        "public_url = \"https://file.example\"\n\
         [ingest.limits]\nmax_width = 1280\nmax_height = 720\n\
         [hls]\npart_target_s = 0.25\n",
    );
    let l = Config::load_with_env(
        Some(&p),
        vars(&[
            ("RUNGS_PUBLIC_URL", "https://env.example"),
            ("RUNGS_INGEST__LIMITS__MAX_WIDTH", "1920"),
        ]),
    )
    .expect("load");
    assert_eq!(l.config.http_base_url(), "https://env.example");
    assert_eq!(l.config.ingest.limits.max_width, 1920);
    assert_eq!(l.config.ingest.limits.max_height, 720);
    assert_eq!(l.config.hls.part_target, Duration::from_millis(250));
    assert_eq!(l.file.as_deref(), Some(p.as_path()));
    assert_eq!(
        l.describe(),
        format!(
            "{} with RUNGS_INGEST__LIMITS__MAX_WIDTH, RUNGS_PUBLIC_URL",
            p.display()
        )
    );
    // A whole section as an inline table merges too.
    let l = Config::load_with_env(
        Some(&p),
        vars(&[("RUNGS_INGEST__LIMITS", "{ max_height = 1080 }")]),
    )
    .expect("load");
    assert_eq!(l.config.ingest.limits.max_width, 1280);
    assert_eq!(l.config.ingest.limits.max_height, 1080);
}

#[test]
fn a_validation_error_names_the_variable_or_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = file(&dir, "[hls]\npart_target_s = 1.5\n");
    let e = Config::load_with_env(Some(&p), vars(&[])).expect_err("invalid");
    assert!(matches!(e, ConfigError::Value { .. }), "{e}");
    assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    let e = Config::load_with_env(Some(&p), vars(&[("RUNGS_HLS__SEGMENT_TARGET_S", "1.2")]))
        .expect_err("invalid");
    assert!(e.to_string().contains("RUNGS_HLS__SEGMENT_TARGET_S"), "{e}");
    let e = env_only(&[("RUNGS_PUBLIC_URL", "ftp://edge.example")]).expect_err("invalid");
    assert!(e.to_string().contains("RUNGS_PUBLIC_URL"), "{e}");
}

#[test]
fn errors_never_show_a_secret() {
    let secret = "s3cr3t-v4lue-0123456789";
    // Too short, from a variable and from the file.
    let e = env_only(&[("RUNGS_API__ADMIN_TOKEN", "short")]).expect_err("short");
    assert!(e.to_string().contains("api.admin_token"), "{e}");
    let dir = tempfile::tempdir().expect("tempdir");
    for text in [
        format!("[api]\nadmin_token = {secret}\n"),
        format!("[api]\nadmin_token = \"{secret}\n"),
        format!("[recording]\ns3_secret_access_key = [\"{secret}\"]\n"),
        format!("[registry]\nurl = {{ x = \"{secret}\" }}\n"),
        format!("api = {{ admin_token = 5, x = \"{secret}\" }}\n"),
    ] {
        let p = file(&dir, &text);
        let e = Config::load(Some(&p)).expect_err("invalid").to_string();
        assert!(!e.contains(secret), "{text:?} gave {e}");
        assert!(e.contains("rungs.toml"), "{e}");
    }
}

#[test]
fn the_config_file_comes_from_the_flag_then_rungs_config_then_the_default_if_present() {
    let dir = tempfile::tempdir().expect("tempdir");
    let present = file(&dir, "");
    let absent = dir.path().join("absent.toml");
    let flag = Path::new("/flag.toml");
    assert_eq!(
        config_path(Some(flag), Some("/env.toml".into()), &present).as_deref(),
        Some(flag)
    );
    assert_eq!(
        config_path(None, Some("/env.toml".into()), &present).as_deref(),
        Some(Path::new("/env.toml"))
    );
    assert_eq!(
        config_path(None, Some("".into()), &present).as_deref(),
        Some(present.as_path())
    );
    assert_eq!(
        config_path(None, None, &present).as_deref(),
        Some(present.as_path())
    );
    assert_eq!(config_path(None, None, &absent), None);
}

#[test]
fn printed_config_hides_secrets_and_loads_back_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Every section away from its defaults, durations and maps included.
    let text = r#"
data_dir = "/var/lib/rungs"
rtmp_addr = "127.0.0.1:1936"
http_addr = "[::]:8443"
admin_addr = "127.0.0.1:9081"
public_url = "https://edge.example/live"
public_rtmp_url = "rtmps://ingest.example/live"
[node]
id = "edge-7"
region = "eu-west"
capacity = 40
[fleet]
lease_s = 20.0
heartbeat_s = 4.0
forward = "proxy"
[drain]
deadline_s = 60.5
[log]
format = "json"
[http]
header_timeout_s = 5.5
idle_timeout_s = 30.0
max_connections = 100
max_blocked_requests = 50
admin_on_player_port = true
[ingest]
reconnect_grace_s = 3.0
ended_linger_s = 12.0
queue_packets = 512
max_connections = 10
max_connections_per_address = 2
auth_timeout_s = 4.0
[ingest.limits]
max_bitrate_kbps = 8000
max_width = 1920
max_height = 1080
max_frame_rate = 60.0
[hls]
part_target_s = 0.333
segment_target_s = 4.0
playlist_segments = 30
[transcode]
default_ladder = "mobile"
preset = "faster"
low_latency = false
encoder_threads = 2
decoder_threads = 2
queue_frames = 60
quality_every_gops = 0
[transcode.ladders]
mobile = [{ name = "540p", height = 540, bitrate_kbps = 1500 }, { name = "270p", height = 270, bitrate_kbps = 400 }]
[player]
hls_js = "/usr/share/rungs/hls.min.js"
[gpu]
enabled = "off"
devices = [0, 2]
[whip]
udp_addr = "127.0.0.1:9189"
ips = ["192.0.2.1"]
session_timeout_s = 5.0
max_sessions = 8
audio_bitrate_kbps = 96
[hooks]
publish_url = "https://backend.example/publish"
play_url = "http://backend.example/play"
timeout_ms = 500
on_timeout = "allow"
cache_s = 2.5
[access]
trusted_proxies = ["10.0.0.0/8"]
client_address_header = "x-real-ip"
[recording]
enabled = true
store = "s3://bucket/prefix"
s3_endpoint = "http://minio:9000"
s3_region = "eu-central-1"
public_base_url = "https://cdn.example"
spool_max_bytes = 1000000
thumbnail_interval_s = 10.0
upload_retry_max_s = 5.0
"#;
    let p = file(&dir, text);
    let first = Config::load(Some(&p)).expect("load");
    let printed = first.to_toml().expect("toml");
    let q = dir.path().join("printed.toml");
    std::fs::write(&q, &printed).expect("write");
    let second = Config::load(Some(&q)).expect("the printed config loads");
    assert_eq!(format!("{second:?}"), format!("{first:?}"), "{printed}");
    assert_eq!(second.to_toml().expect("toml"), printed);
    // The defaults too.
    let printed = Config::default().to_toml().expect("toml");
    std::fs::write(&q, &printed).expect("write");
    let back = Config::load(Some(&q)).expect("load");
    assert_eq!(format!("{back:?}"), format!("{:?}", Config::default()));

    // Secrets: set, they are redacted; the rest prints as before.
    let secrets = [
        ("RUNGS_API__ADMIN_TOKEN", "at_0123456789abcdefSECRET1"),
        ("RUNGS_RECORDING__S3_ACCESS_KEY_ID", "AKIASECRET2"),
        ("RUNGS_RECORDING__S3_SECRET_ACCESS_KEY", "SECRET3/xyz"),
        (
            "RUNGS_HOOKS__PLAY_URL",
            "https://hooks.example/play?token=SECRET4&v=1",
        ),
        (
            "RUNGS_HOOKS__PUBLISH_URL",
            "https://user:SECRET5@hooks.example/publish",
        ),
    ];
    let l = Config::load_with_env(Some(&p), vars(&secrets)).expect("load");
    let printed = l.config.to_toml().expect("toml");
    for (_, v) in secrets {
        let s = &v[v.find("SECRET").expect("marked")..][..7];
        assert!(!printed.contains(s), "{s} in {printed}");
    }
    assert!(
        printed.contains(&format!("admin_token = \"{REDACTED}\"")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!(
            "play_url = \"https://hooks.example/play?token={REDACTED}&v={REDACTED}\""
        )),
        "{printed}"
    );
    assert!(
        printed.contains(&format!(
            "publish_url = \"https://user:{REDACTED}@hooks.example/publish\""
        )),
        "{printed}"
    );
}

#[test]
fn urls_keep_what_an_operator_checks_and_lose_what_is_secret() {
    use crate::config::redact_url;
    assert_eq!(redact_url(""), "");
    assert_eq!(
        redact_url("https://backend.example/hook"),
        "https://backend.example/hook"
    );
    assert_eq!(
        redact_url("postgres://rungs:pa%40ss@db.example:5432/rungs?sslmode=require"),
        format!("postgres://rungs:{REDACTED}@db.example:5432/rungs?sslmode={REDACTED}")
    );
    assert_eq!(redact_url("not a url with a secret"), REDACTED);
}

#[test]
fn the_field_list_is_serde_s() {
    let fields = field_names::<Config>();
    for f in [
        "data_dir",
        "public_url",
        "hls",
        "log",
        "registry",
        "recording",
    ] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    // Every serialized top-level key is a field the variables can name.
    let defaults = toml::Table::try_from(Config::default()).expect("serialize");
    for k in defaults.keys() {
        assert!(fields.contains(&k.as_str()), "{k}");
    }
}
