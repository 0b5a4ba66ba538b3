use super::*;
use base64::Engine as _;
use serde_json::json;

const NOW: u64 = 1_800_000_000;

struct Fixture {
    access: Arc<Access>,
    private: String,
    other_private: String,
}

fn fixture() -> Fixture {
    let (private, public) = generate_key_pair().expect("key pair");
    let (other_private, _) = generate_key_pair().expect("key pair");
    let access = Access::detached();
    access
        .set(&["chan"], &[("pk_1", &public)], &[("gone", NOW - 10)])
        .expect("keys");
    Fixture {
        access,
        private,
        other_private,
    }
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({ "channel": "chan", "exp": NOW + 60 });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    c
}

fn check(f: &Fixture, token: Option<&str>, origin: Option<&str>) -> Result<Grant, Refusal> {
    f.access.check(&Request {
        channel: "chan",
        token,
        origin,
        now: NOW,
        multivariant: false,
    })
}

#[test]
fn each_refusal_has_its_reason() {
    let f = fixture();
    let sign = |c: serde_json::Value| sign_token(&f.private, None, &c).expect("sign");
    let ok = sign(claims(json!({})));
    assert_eq!(check(&f, Some(&ok), None).map(|g| g.max_height), Ok(None));
    // Named by kid, and twice (the second from the cache).
    let kid = sign_token(&f.private, Some("pk_1"), &claims(json!({}))).expect("sign");
    assert!(check(&f, Some(&kid), None).is_ok());
    assert!(check(&f, Some(&kid), None).is_ok());

    assert_eq!(check(&f, None, None), Err(Refusal::Missing));
    assert_eq!(check(&f, Some(""), None), Err(Refusal::Missing));
    assert_eq!(check(&f, Some("not.a.jwt"), None), Err(Refusal::Invalid));
    let expired = sign(claims(json!({ "exp": NOW })));
    assert_eq!(check(&f, Some(&expired), None), Err(Refusal::Expired));
    let unregistered = sign_token(&f.other_private, None, &claims(json!({}))).expect("sign");
    assert_eq!(
        check(&f, Some(&unregistered), None),
        Err(Refusal::BadSignature)
    );
    // A signature altered in its last character.
    let mut tampered = ok.clone();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(check(&f, Some(&tampered), None), Err(Refusal::BadSignature));
    let other = sign(claims(json!({ "channel": "other" })));
    assert_eq!(check(&f, Some(&other), None), Err(Refusal::WrongChannel));
    let no_exp = sign(json!({ "channel": "chan" }));
    assert_eq!(check(&f, Some(&no_exp), None), Err(Refusal::Invalid));
    let long_viewer = sign(claims(json!({ "viewer-id": "v".repeat(41) })));
    assert_eq!(check(&f, Some(&long_viewer), None), Err(Refusal::Invalid));

    let site = sign(claims(
        json!({ "access-control-allow-origin": "https://a.example" }),
    ));
    assert!(check(&f, Some(&site), Some("https://a.example")).is_ok());
    for wrong in [
        None,
        Some("https://b.example"),
        Some("https://a.example:8443"),
    ] {
        assert_eq!(
            check(&f, Some(&site), wrong),
            Err(Refusal::Origin),
            "{wrong:?}"
        );
    }
    let any = sign(claims(json!({ "access-control-allow-origin": "*" })));
    assert!(check(&f, Some(&any), None).is_ok());

    // Revoked at NOW - 10: issued before (or without iat) is refused,
    // issued after is not.
    for (iat, want) in [
        (None, Err(Refusal::Revoked)),
        (Some(NOW - 20), Err(Refusal::Revoked)),
        (Some(NOW - 10), Err(Refusal::Revoked)),
        (Some(NOW - 5), Ok(None)),
    ] {
        let mut c = claims(json!({ "viewer-id": "gone" }));
        if let Some(iat) = iat {
            c["iat"] = json!(iat);
        }
        assert_eq!(
            check(&f, Some(&sign(c)), None).map(|g| g.max_height),
            want,
            "iat {iat:?}"
        );
    }
    let max = sign(claims(json!({ "max-height": 480 })));
    assert_eq!(
        check(&f, Some(&max), None).map(|g| g.max_height),
        Ok(Some(480))
    );
}

#[test]
fn a_single_use_token_opens_the_multivariant_playlist_once() {
    let f = fixture();
    let t = sign_token(&f.private, None, &claims(json!({ "single-use-id": "u1" }))).expect("sign");
    let req = |multivariant| Request {
        channel: "chan",
        token: Some(&t),
        origin: None,
        now: NOW,
        multivariant,
    };
    assert!(f.access.check(&req(true)).is_ok());
    assert_eq!(f.access.check(&req(true)), Err(Refusal::Used));
    // Its child URIs still work.
    assert!(f.access.check(&req(false)).is_ok());
}

#[test]
fn a_deleted_key_stops_verifying_cached_tokens() {
    let f = fixture();
    let t = sign_token(&f.private, None, &claims(json!({}))).expect("sign");
    assert!(check(&f, Some(&t), None).is_ok());
    f.access.set(&["chan"], &[], &[]).expect("no keys");
    assert_eq!(check(&f, Some(&t), None), Err(Refusal::BadSignature));
}

#[test]
fn keys_are_p384_spki_pem_only() {
    let (_, public) = generate_key_pair().expect("pair");
    assert_eq!(normalize_public_pem(&public).expect("valid"), public);
    // Re-wrapped at another width, with CRLF: the same key.
    let der = keys::pem_der(&public, "PUBLIC KEY").expect("der");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let crlf = format!(
        "-----BEGIN PUBLIC KEY-----\r\n{}\r\n{}\r\n-----END PUBLIC KEY-----\r\n",
        &b64[..40],
        &b64[40..]
    );
    assert_eq!(normalize_public_pem(&crlf).expect("crlf"), public);
    assert!(matches!(
        normalize_public_pem("hello"),
        Err(KeyError::NotPem)
    ));
    // A P-256 SPKI (OID prime256v1) is refused.
    let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\nq9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n-----END PUBLIC KEY-----\n";
    assert!(matches!(normalize_public_pem(p256), Err(KeyError::NotP384)));
}

#[test]
fn every_uri_of_a_playlist_carries_the_token() {
    let media = "#EXTM3U\n\
#EXT-X-MAP:URI=\"init-s1-1.mp4\"\n\
#EXT-X-PART:DURATION=0.2,URI=\"s1-0.0.m4s\",INDEPENDENT=YES\n\
#EXTINF:2.0,\n\
s1-0.m4s\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1-1.0.m4s\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=1,LAST-PART=0\n";
    let out = rewrite_playlist(media, "a.b-c_d");
    let want = "#EXTM3U\n\
#EXT-X-MAP:URI=\"init-s1-1.mp4?token=a.b-c_d\"\n\
#EXT-X-PART:DURATION=0.2,URI=\"s1-0.0.m4s?token=a.b-c_d\",INDEPENDENT=YES\n\
#EXTINF:2.0,\n\
s1-0.m4s?token=a.b-c_d\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1-1.0.m4s?token=a.b-c_d\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8?token=a.b-c_d\",LAST-MSN=1,LAST-PART=0\n";
    assert_eq!(out, want);
    let master = "#EXTM3U\r\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8\",GROUP-ID=\"audio\"\r\nsource/index.m3u8?x=1\r\n";
    assert_eq!(
        rewrite_playlist(master, "t/+"),
        "#EXTM3U\r\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8?token=t%2F%2B\",GROUP-ID=\"audio\"\r\nsource/index.m3u8?x=1&token=t%2F%2B\r\n"
    );
}

#[test]
fn max_height_leaves_taller_variants_out() {
    let master = "#EXTM3U\n\
#EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720,AUDIO=\"audio\"\n\
source/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=1200000,RESOLUTION=854x480,AUDIO=\"audio\"\n\
480p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=284x160,AUDIO=\"audio\"\n\
160p/index.m3u8\n";
    let out = limit_height(master, 480);
    assert!(
        !out.contains("1280x720") && !out.contains("source/"),
        "{out}"
    );
    assert!(out.contains("480p/index.m3u8") && out.contains("160p/index.m3u8"));
    let out = limit_height(master, 100);
    assert!(
        out.contains("160p/index.m3u8") && !out.contains("480p"),
        "{out}"
    );
    assert_eq!(limit_height(master, 2160), master);
}

#[test]
fn channel_rules_apply_to_public_and_private_channels_and_shape_cors() {
    let (_db, locator) =
        crate::serve::geo::test_locator(&[("203.0.113.0/24", "FR"), ("198.51.100.0/24", "DE")]);
    let access = Access::detached_with(locator);
    assert!(access.knows_countries());
    let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    access
        .set_policy(
            "open",
            &Policy {
                deny_countries: list(&["FR"]),
                deny_cidrs: list(&["192.0.2.0/24"]),
                ..Policy::default()
            },
        )
        .expect("valid");
    access
        .set_policy(
            "site",
            &Policy {
                allowed_origins: list(&["https://a.example"]),
                allow_countries: list(&["DE"]),
                ..Policy::default()
            },
        )
        .expect("valid");
    // Private flags set later keep the rules.
    access.set(&["site"], &[], &[]).expect("no keys");
    let ip = |s: &str| Some(s.parse::<IpAddr>().expect("address"));
    let (fr, de, other) = (ip("203.0.113.7"), ip("198.51.100.7"), ip("192.0.2.7"));
    let site = Some("https://a.example");
    for (channel, client, origin, want) in [
        ("open", fr, None, Err(Refusal::Region)),
        ("open", de, None, Ok(())),
        ("open", other, None, Err(Refusal::Network)),
        ("plain", fr, None, Ok(())),
        ("site", de, site, Ok(())),
        ("site", de, Some("https://b.example"), Err(Refusal::Origin)),
        ("site", de, None, Err(Refusal::Origin)),
        ("site", fr, site, Err(Refusal::Region)),
        // Not in the database: unknown, and only DE is allowed.
        ("site", ip("10.0.0.1"), site, Err(Refusal::Region)),
    ] {
        assert_eq!(
            access.admit(channel, client, origin),
            want,
            "{channel} {client:?} {origin:?}"
        );
    }
    assert_eq!(access.cors("plain", Some("https://b.example")), Cors::Any);
    assert_eq!(access.cors("open", Some("https://b.example")), Cors::Any);
    assert_eq!(access.cors("site", site), Cors::Echo);
    assert_eq!(
        access.cors("site", Some("https://b.example")),
        Cors::Withhold
    );
    assert_eq!(access.cors("site", None), Cors::Withhold);
    access
        .set_policy("site", &Policy::default())
        .expect("cleared");
    assert_eq!(access.cors("site", Some("https://b.example")), Cors::Any);
    assert_eq!(access.admit("site", fr, None), Ok(()));
    assert!(access.is_private("site"));
}

#[test]
fn referer_gives_its_origin() {
    let mut h = HeaderMap::new();
    assert_eq!(request_origin(&h), None);
    h.insert(
        header::REFERER,
        axum::http::HeaderValue::from_static("https://r.example/page"),
    );
    assert_eq!(request_origin(&h), Some("https://r.example"));
    h.insert(
        header::ORIGIN,
        axum::http::HeaderValue::from_static("https://o.example"),
    );
    assert_eq!(request_origin(&h), Some("https://o.example"));
    assert_eq!(
        referer_origin("https://a.example:8443/page?x#y"),
        Some("https://a.example:8443")
    );
    assert_eq!(referer_origin("http://a.example"), Some("http://a.example"));
    assert_eq!(referer_origin("nonsense"), None);
}
