use super::*;

#[test]
fn defaults_are_valid() {
    let c = Config::load(None).expect("defaults");
    assert_eq!(c.rtmp_ingest_url(), "rtmp://localhost:1935/live");
    assert_eq!(c.http_base_url(), "http://localhost:8080");
}

#[test]
fn shipped_config_is_the_defaults() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rungs.toml");
    let c = Config::load(Some(&p)).expect("deploy/rungs.toml");
    assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
}

/// Dotted paths of every value in `t`; an empty table counts as one.
fn key_paths(t: &toml::Table) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (k, v) in t {
        match v {
            toml::Value::Table(inner) if !inner.is_empty() => {
                out.extend(key_paths(inner).into_iter().map(|p| format!("{k}.{p}")));
            }
            _ => {
                out.insert(k.clone());
            }
        }
    }
    out
}

/// The README's reference and deploy/rungs.toml are one text, which
/// names every field (an option unset by default as a comment), each
/// with its default and a description, and nothing else: so neither
/// can drift from the types.
#[test]
fn reference_names_every_field_with_its_default_and_nothing_else() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = &readme[readme.find("\n## Configuration\n").expect("section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &section[start..][..section[start..].find("```\n").expect("its end")];
    let shipped = std::fs::read_to_string(root.join("deploy/rungs.toml")).expect("deploy");
    assert_eq!(
        block, shipped,
        "README's reference and deploy/rungs.toml differ"
    );

    let defaults = toml::Table::try_from(Config::default()).expect("serialize");
    let written: toml::Table = shipped.parse().expect("parse");
    let (want, have) = (key_paths(&defaults), key_paths(&written));
    let missing: Vec<_> = want.difference(&have).collect();
    let unknown: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty(),
        "fields missing from the reference: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "the reference names no such fields: {unknown:?}"
    );

    // Options unset by default are shown as comments in their section.
    let mut every = Config::default();
    every.api.admin_token = Some("0123456789abcdef".into());
    let every = key_paths(&toml::Table::try_from(every).expect("serialize"));
    let mut section = String::new();
    let mut commented = std::collections::BTreeSet::new();
    for line in shipped.lines() {
        let line = line.trim();
        if let Some(h) = line.strip_prefix('[') {
            section = h[..h.find(']').expect("header")].to_string();
        } else if let Some((k, _)) = line.strip_prefix("# ").and_then(|l| l.split_once(" = ")) {
            commented.insert(format!("{section}.{k}"));
        } else if !line.is_empty() && !line.starts_with('#') {
            assert!(
                line.split_once(" = ")
                    .is_some_and(|(_, v)| v.contains(" # ")),
                "no description: {line}"
            );
        }
    }
    for k in every.difference(&want) {
        assert!(commented.contains(k), "{k} is not shown in the reference");
    }
}

#[test]
fn file_overrides_and_rejects_nonsense() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("rungs.toml");
    std::fs::write(
        &p,
        "public_url = \"https://edge.example/tv/\"\n[hls]\npart_target_s = 0.333\n",
    )
    .expect("write");
    let c = Config::load(Some(&p)).expect("load");
    assert_eq!(c.hls.part_target, Duration::from_millis(333));
    assert_eq!(c.hls.segment_target, Duration::from_secs(2));
    assert_eq!(c.http_base_url(), "https://edge.example/tv");
    assert_eq!(c.path_prefix(), "/tv");
    assert_eq!(c.rtmp_ingest_url(), "rtmp://edge.example:1935/live");
    std::fs::write(&p, "public_url = \"ftp://edge.example\"\n").expect("write");
    assert!(Config::load(Some(&p)).is_err());
    std::fs::write(&p, "public_url = \"https://edge.example/?a=b\"\n").expect("write");
    assert!(Config::load(Some(&p)).is_err());

    std::fs::write(&p, "[hls]\npart_target_s = 5.0\n").expect("write");
    assert!(Config::load(Some(&p)).is_err());
    std::fs::write(
        &p,
        "[transcode]\ndefault_ladder = \"mobile\"\n\
         [transcode.ladders]\nmobile = [{ name = \"540p\", height = 540, bitrate_kbps = 1500 }]\n",
    )
    .expect("write");
    let c = Config::load(Some(&p)).expect("custom ladder");
    assert!(c.ladders().expect("ladders").contains("mobile"));
    std::fs::write(&p, "[transcode]\ndefault_ladder = \"nope\"\n").expect("write");
    assert!(Config::load(Some(&p)).is_err());
    assert_eq!(Config::default().transcode.scaler, Kernel::Bicubic);
    std::fs::write(&p, "[transcode]\nscaler = \"lanczos\"\n").expect("write");
    let c = Config::load(Some(&p)).expect("lanczos");
    assert_eq!(c.transcode.scaler, Kernel::Lanczos3);
    std::fs::write(&p, "[transcode]\nscaler = \"nearest\"\n").expect("write");
    let err = Config::load(Some(&p)).expect_err("unknown kernel");
    assert!(err.to_string().contains("bicubic"), "{err}");
    std::fs::write(
        &p,
        "[access]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\nclient_address_header = \"X-Real-IP\"\n",
    )
    .expect("write");
    let c = Config::load(Some(&p)).expect("access");
    assert_eq!(c.access.trusted_proxies.len(), 2);
    std::fs::write(&p, "[access]\ntrusted_proxies = [\"cdn\"]\n").expect("write");
    let err = Config::load(Some(&p)).expect_err("bad proxy");
    assert!(err.to_string().contains("access.trusted_proxies"), "{err}");
    std::fs::write(&p, "typo_field = 1\n").expect("write");
    let err = Config::load(Some(&p)).expect_err("unknown field");
    assert!(err.to_string().contains("typo_field"), "{err}");
}
