use super::*;
use rungs::registry::{Channel, Multitrack, TrackUse};

#[test]
fn cli_parses_the_documented_forms() {
    Cli::try_parse_from([
        "rungs",
        "serve",
        "--config",
        "x.toml",
        "--data-dir",
        "d",
        "--rtmp-addr",
        "127.0.0.1:1935",
        "--http-addr",
        "127.0.0.1:8080",
        "--admin-addr",
        "127.0.0.1:8081",
    ])
    .expect("serve");
    Cli::try_parse_from([
        "rungs",
        "channel",
        "create",
        "--data-dir",
        "d",
        "--name",
        "n",
        "--json",
    ])
    .expect("create");
    Cli::try_parse_from(["rungs", "channel", "list", "--data-dir", "d"]).expect("list");
    Cli::try_parse_from(["rungs", "channel", "show", "--data-dir", "d", "abc"]).expect("show");
    Cli::try_parse_from(["rungs", "channel", "delete", "--data-dir", "d", "abc"]).expect("delete");
    Cli::try_parse_from(["rungs", "channel", "rotate-key", "--data-dir", "d", "abc"])
        .expect("rotate");
    for args in [
        &["channel", "create", "--name", "n", "--private"][..],
        &["channel", "update", "abc", "--private", "true"],
        &["channel", "update", "abc", "--private", "false", "--json"],
        &[
            "channel",
            "create",
            "--name",
            "n",
            "--allow-origin",
            "https://a.example",
            "--allow-origin",
            "https://b.example",
            "--allow-country",
            "FR,DE",
            "--deny-cidr",
            "10.0.0.0/8",
            "--play-hook",
            "https://backend.example/play",
        ],
        &[
            "channel",
            "update",
            "abc",
            "--allow-origin",
            "",
            "--deny-country",
            "CN",
            "--allow-cidr",
            "192.0.2.0/24",
            "--publish-hook",
            "",
        ],
        &["playback-key", "create", "--json"],
        &["playback-key", "import", "--public-key", "pub.pem"],
        &["playback-key", "list"],
        &["playback-key", "delete", "pk_1"],
        &["viewer", "revoke", "viewer-7"],
        &["config", "check"],
        &["config", "check", "--config", "x.toml", "--data-dir", "d"],
        &["channel", "reconnect", "abc"],
        &[
            "channel",
            "reconnect",
            "abc",
            "--tc-url",
            "rtmp://edge-2.example/live",
            "--json",
            "--admin-addr",
            "127.0.0.1:8081",
        ],
    ] {
        Cli::try_parse_from(std::iter::once("rungs").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
    Cli::try_parse_from([
        "rungs",
        "transcode",
        "--input",
        "in.mp4",
        "--output",
        "out",
        "--ladder",
        "standard",
        "--json",
    ])
    .expect("transcode");
}

#[test]
fn policy_flags_make_a_patch_and_an_empty_value_clears() {
    let patch = |args: &[&str]| {
        let cli = Cli::try_parse_from(
            ["rungs", "channel", "update", "abc"]
                .iter()
                .chain(args)
                .copied(),
        )
        .expect("parse");
        match cli.cmd {
            Cmd::Channel {
                cmd: ChannelCmd::Update { policy, .. },
            } => policy.patch(),
            _ => panic!("not an update"),
        }
    };
    assert!(patch(&[]).is_empty());
    let p = patch(&[
        "--allow-origin",
        "https://a.example",
        "--allow-origin",
        "https://b.example",
        "--deny-country",
        "fr,de",
        "--play-hook",
        "",
    ]);
    assert_eq!(
        p.allowed_origins,
        Some(vec!["https://a.example".into(), "https://b.example".into()])
    );
    assert_eq!(p.deny_countries, Some(vec!["fr".into(), "de".into()]));
    assert_eq!(p.play_hook, Some(Some(String::new())));
    assert_eq!(p.allow_cidrs, None);
    assert_eq!(patch(&["--allow-origin", ""]).allowed_origins, Some(vec![]));
    let p = patch(&[
        "--multitrack",
        "require",
        "--tracks",
        "passthrough-only",
        "--max-height",
        "1080",
    ]);
    assert_eq!(p.multitrack, Some(Multitrack::Require));
    assert_eq!(p.tracks, Some(TrackUse::PassthroughOnly));
    assert_eq!(p.max_height, Some(Some(1080)));
    assert_eq!(patch(&["--max-height", "0"]).max_height, Some(None));
    assert!(
        Cli::try_parse_from(["rungs", "channel", "update", "abc", "--tracks", "some"]).is_err(),
        "an unknown value is refused"
    );
}

fn sample_channel() -> Channel {
    Channel {
        id: "abc".into(),
        name: "n".into(),
        stream_key: "sk_x".into(),
        ladder: "standard".into(),
        created_at: 0,
        private: false,
    }
}

#[test]
fn text_output_shows_the_rules_that_are_set() {
    let ch = sample_channel();
    let policy = Policy {
        allowed_origins: vec!["https://a.example".into()],
        deny_countries: vec!["FR".into()],
        allow_cidrs: vec!["10.0.0.0/8".into()],
        tracks: TrackUse::Transcode,
        max_height: Some(720),
        ..Policy::default()
    };
    let mut buf = Vec::new();
    print_channels(&mut buf, &Config::default(), &[(ch, policy)], false, true).expect("print");
    let text = String::from_utf8(buf).expect("utf-8");
    assert!(text.contains("origins       https://a.example\n"), "{text}");
    assert!(text.contains("countries     not FR\n"), "{text}");
    assert!(text.contains("networks      only 10.0.0.0/8\n"), "{text}");
    assert!(
        text.contains("multitrack    allow, tracks transcode\n"),
        "{text}"
    );
    assert!(text.contains("max height    720 lines\n"), "{text}");
    assert!(!text.contains("hook"), "{text}");
}

#[test]
fn json_output_is_one_object() {
    let cfg = Config::default();
    let ch = sample_channel();
    let mut buf = Vec::new();
    print_channels(&mut buf, &cfg, &[(ch, Policy::default())], true, true).expect("print");
    let v: serde_json::Value = serde_json::from_slice(&buf).expect("json");
    assert_eq!(v["ingest"]["rtmp"], "rtmp://localhost:1935/live");
    assert_eq!(v["ingest"]["whip"], "http://localhost:8080/whip/abc");
    assert_eq!(
        v["playback_url"],
        "http://localhost:8080/hls/abc/master.m3u8"
    );
}

#[test]
fn reconnect_sends_the_tc_url_given_and_says_where_to() {
    let cli = Cli::try_parse_from(["rungs", "channel", "reconnect", "abc", "--tc-url", "/live"])
        .expect("parse");
    let Cmd::Channel {
        cmd: ChannelCmd::Reconnect { id, tc_url, .. },
    } = cli.cmd
    else {
        panic!("not a reconnect");
    };
    assert_eq!((id.as_str(), tc_url.as_deref()), ("abc", Some("/live")));
    let body: serde_json::Value =
        serde_json::from_slice(&reconnect_body(tc_url.as_deref())).expect("json");
    assert_eq!(body, serde_json::json!({ "tc_url": "/live" }));
    assert_eq!(reconnect_body(None), b"{}");
    assert!(
        reconnect_text("abc", Some("/live"))
            .starts_with("channel abc: its publisher was asked to reconnect to /live;")
    );
    assert!(reconnect_text("abc", None).contains("asked to reconnect; the stream continues"));
}
