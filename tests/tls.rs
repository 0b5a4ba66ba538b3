//! HTTPS and HTTP/2 on the player port (`[tls]`), with real clients: a test
//! CA and its leaves for 127.0.0.1 and localhost, made with rcgen in a temp
//! dir; reqwest trusting only that CA (HTTP/2 through ALPN, and HTTP/1.1
//! only); hls.js in headless Chromium playing the node's own /play page over
//! HTTPS, which trusts the leaf by its key's hash alone; and a new
//! certificate taken on SIGHUP, a bad one refused while the old is kept.
//! The browser test needs /usr/bin/chromium and `npm install`: it fails,
//! not skips, when they are missing.

mod common;

use base64::Engine as _;
use common::*;
use rcgen::{CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PublicKeyData};
use sha2::Digest as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A test CA, and leaves it signs.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// One leaf certificate for 127.0.0.1 and localhost.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
    /// base64(SHA-256(SubjectPublicKeyInfo)): what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    spki_sha256: String,
}

impl Pki {
    fn new() -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "rungs e2e test CA");
        let key = KeyPair::generate().expect("CA key");
        Pki {
            dir: tempfile::Builder::new()
                .prefix("rungs-tls-")
                .tempdir()
                .expect("temp dir"),
            issuer: CertifiedIssuer::self_signed(ca, key).expect("CA certificate"),
            ca_pem: String::new(),
        }
        .with_ca_pem()
    }

    fn with_ca_pem(mut self) -> Pki {
        self.ca_pem = self.issuer.pem();
        self
    }

    fn leaf(&self, cn: &str) -> Leaf {
        let mut p = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &*self.issuer).expect("leaf certificate");
        let spki = sha2::Sha256::digest(key.subject_public_key_info());
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            spki_sha256: base64::engine::general_purpose::STANDARD.encode(spki),
        }
    }

    /// Where the node's `[tls]` points; `install` writes a leaf there.
    fn paths(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("node.crt"),
            self.dir.path().join("node.key"),
        )
    }

    fn install(&self, leaf: &Leaf) {
        let (cert, key) = self.paths();
        std::fs::write(cert, &leaf.cert_pem).expect("write the certificate");
        std::fs::write(key, &leaf.key_pem).expect("write the key");
    }

    /// A client that trusts this CA only: a fresh one opens fresh
    /// connections (and so a fresh handshake).
    fn client(&self, http1_only: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM");
        let b = reqwest::Client::builder()
            .tls_certs_only([ca])
            .tls_info(true)
            .no_proxy()
            .timeout(Duration::from_secs(20));
        let b = if http1_only { b.http1_only() } else { b };
        b.build().expect("reqwest client")
    }
}

fn tls_node(pki: &Pki, http: HttpLimits) -> Node {
    Node::start(NodeConfig {
        public_url: "https://127.0.0.1:{http_port}".into(),
        tls: Some(pki.paths()),
        http,
        ..NodeConfig::default()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    // Workers of their own: the checks block this thread on the admin port
    // (ureq) while requests spawned on the runtime stay parked.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// GET `url` until it answers 200 (the channel goes live), up to `limit`.
async fn get_ok(c: &reqwest::Client, url: &str, limit: Duration) -> reqwest::Response {
    let end = Instant::now() + limit;
    loop {
        let last = match c.get(url).send().await {
            Ok(r) if r.status() == 200 => return r,
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => format!("{e:?}"),
        };
        assert!(
            Instant::now() < end,
            "GET {url}: no 200 within {limit:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leaf certificate a fresh connection to `url` is shown.
async fn served_leaf(pki: &Pki, url: &str) -> Vec<u8> {
    let r = pki
        .client(false)
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the TLS info of the connection")
        .to_vec()
}

fn signal_hup(node: &Node) {
    let pid = node.pid().expect("the node runs");
    let st = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -HUP {pid}: {st}");
}

fn wait_metric(node: &Node, name: &str, labels: &[(&str, &str)], at_least: f64) {
    let got = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        (node.metrics().sum(name, labels) >= at_least).then_some(())
    });
    assert!(
        got.is_some(),
        "{name}{labels:?} did not reach {at_least} within 10 s (now {})",
        node.metrics().sum(name, labels)
    );
}

/// The player port over HTTPS: playlists and media over HTTP/2 and over
/// HTTP/1.1; parked blocking reloads multiplexed on one HTTP/2 connection
/// still count one by one against `max_blocked_requests`; SIGHUP takes a
/// renewed certificate for new connections and keeps the old one when the
/// new files do not match.
#[test]
fn https_serves_h2_and_http11_and_reloads_the_certificate_on_sighup() {
    let _turn = take_turn();
    let pki = Pki::new();
    let first = pki.leaf("first");
    let second = pki.leaf("second");
    let third = pki.leaf("third");
    pki.install(&first);
    let node = tls_node(
        &pki,
        HttpLimits {
            max_blocked_requests: 2,
            ..HttpLimits::default()
        },
    );
    let base = format!("https://127.0.0.1:{}", node.http_port);
    let ch = node.create_channel("tls");
    let publisher = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts::default(),
        &node.data_dir,
    );
    node.attach_log(&publisher.log_path);
    runtime().block_on(async {
        let h2 = pki.client(false);
        let h1 = pki.client(true);

        // (a) The multivariant playlist, over HTTP/2 (ALPN h2).
        let master_url = format!("{base}/hls/{}/master.m3u8", ch.id);
        let r = get_ok(&h2, &master_url, Duration::from_secs(30)).await;
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN negotiated h2");
        let text = r.text().await.expect("multivariant body");
        let mv = parse_multivariant(&text).expect("a multivariant playlist");
        assert!(!text.contains("http://"), "no plain-HTTP URL in {text}");
        let variant = mv.variants.first().expect("a variant");
        let media_url = resolve(&master_url, &variant.uri);
        assert!(media_url.starts_with(&base), "{media_url}");

        // The media playlist, its init section and a complete segment.
        let pl = wait_media(&h2, &media_url, 1).await;
        let seg = pl.segments.last().expect("a segment");
        for uri in [pl.map_uri.clone().expect("EXT-X-MAP"), seg.uri.clone()] {
            let url = resolve(&media_url, &uri);
            let r = h2.get(&url).send().await.expect("media over h2");
            assert_eq!(r.status(), 200, "{url}");
            assert_eq!(r.version(), reqwest::Version::HTTP_2, "{url}");
            assert!(!r.bytes().await.expect("media body").is_empty(), "{url}");
        }

        // An HTTP/1.1-only client is served as before.
        let r = h1.get(&master_url).send().await.expect("GET over HTTP/1.1");
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), reqwest::Version::HTTP_11);

        // Blocking reloads two segments ahead, all on the one HTTP/2
        // connection `h2` holds: two park (the cap), the next two are
        // refused at once.
        let last = pl.last_msn().expect("a complete segment");
        let fresh = get_ok(
            &h2,
            &format!("{media_url}?_HLS_msn={}", last + 1),
            Duration::from_secs(10),
        )
        .await
        .text()
        .await
        .unwrap_or_default();
        let last = parse_media(&fresh)
            .ok()
            .and_then(|p| p.last_msn())
            .unwrap_or(last);
        let wait_url = format!("{media_url}?_HLS_msn={}", last + 2);
        let parked: Vec<_> = (0..2)
            .map(|_| tokio::spawn(h2.get(&wait_url).send()))
            .collect();
        wait_metric(&node, "rungs_hls_blocked_requests", &[], 2.0);
        for _ in 0..2 {
            let r = h2.get(&wait_url).send().await.expect("an answer");
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(r.status(), 503, "past max_blocked_requests");
            assert_eq!(r.headers()["retry-after"], "1");
        }
        for p in parked {
            let r = p.await.expect("task").expect("the parked request's answer");
            assert_eq!(r.status(), 200, "a parked request is answered");
        }
        let m = node.metrics();
        assert_eq!(
            m.sum(
                "rungs_http_refused_requests_total",
                &[("reason", "too_many_blocked")]
            ),
            2.0
        );
        let expiry = m.sum("rungs_tls_certificate_expiry_timestamp_seconds", &[]);
        assert!(
            expiry > now_unix(),
            "certificate expiry {expiry} is in the future"
        );

        // (c) SIGHUP with a renewed certificate: new connections see it.
        let health = format!("{base}/healthz");
        assert_eq!(served_leaf(&pki, &health).await, first.der);
        pki.install(&second);
        signal_hup(&node);
        wait_metric(&node, "rungs_tls_reloads_total", &[("result", "ok")], 1.0);
        assert_eq!(
            served_leaf(&pki, &health).await,
            second.der,
            "a new connection after SIGHUP gets the new certificate"
        );
        // The connection opened before it goes on.
        let r = h2
            .get(&master_url)
            .send()
            .await
            .expect("the old connection");
        assert_eq!(r.status(), 200);

        // A half-done renewal (a new certificate beside the old key): the
        // reload fails, the node keeps serving the certificate it had.
        std::fs::write(pki.paths().0, &third.cert_pem).expect("write");
        signal_hup(&node);
        wait_metric(
            &node,
            "rungs_tls_reloads_total",
            &[("result", "error")],
            1.0,
        );
        assert_eq!(served_leaf(&pki, &health).await, second.der);
        let r = pki
            .client(false)
            .get(&master_url)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
    });
    let mut node = node;
    assert!(node.is_running(), "the node survived a bad reload");
    let log = node.log();
    assert!(
        log.contains("TLS certificate reload failed"),
        "the failure is logged"
    );
    let secret = second
        .key_pem
        .lines()
        .nth(1)
        .expect("a base64 line in the key");
    assert!(!log.contains(secret), "key material in the node's log");
}

/// The media playlist at `url` once it lists `segments` complete segments
/// (up to 30 s).
async fn wait_media(c: &reqwest::Client, url: &str, segments: usize) -> MediaPlaylist {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get_ok(c, url, Duration::from_secs(30)).await;
        let text = r.text().await.unwrap_or_default();
        if let Ok(pl) = parse_media(&text)
            && pl.segments.len() >= segments
        {
            return pl;
        }
        assert!(
            Instant::now() < end,
            "{url}: fewer than {segments} complete segments within 30 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// (b) hls.js in headless Chromium plays the node's own /play page over
/// HTTPS: the page, its playlists and its media come over HTTP/2 (the
/// page reads each resource's `nextHopProtocol`), and the picture moves.
#[test]
fn browser_plays_over_https_and_http2() {
    require_browser();
    let _turn = take_turn();
    let pki = Pki::new();
    let leaf = pki.leaf("browser");
    pki.install(&leaf);
    let node = tls_node(&pki, HttpLimits::default());
    let base = format!("https://127.0.0.1:{}", node.http_port);
    let ch = node.create_channel("tls-browser");
    let publisher = Publisher::start(
        &node.rtmp_url(&ch.stream_key),
        &PubOpts::default(),
        &node.data_dir,
    );
    node.attach_log(&publisher.log_path);
    let media = format!("{base}/hls/{}/source/index.m3u8", ch.id);
    runtime().block_on(wait_media(&pki.client(false), &media, 2));

    let page = format!("{base}/play/{}", ch.id);
    let v = run_page_script("tests/player/tls.mjs", &[&page, &leaf.spki_sha256, "12"]);
    assert!(
        v["ok"] == true,
        "browser playback over HTTPS failed: {}\nreport: {}\nconsole: {}",
        v["error"],
        v["report"],
        v["console"]
    );
    let rep = &v["report"];
    eprintln!(
        "over HTTPS: currentTime +{} s, {} frames decoded, protocols {}",
        rep["advanced"], rep["decodedFrames"], rep["protocols"]
    );
    let f = Findings::default();
    f.check(
        rep["advanced"].as_f64().is_some_and(|a| a >= 6.0),
        "currentTime grows with the wall clock (>= 6 s over ~10 s of playing)",
        || format!("{rep}"),
    );
    f.check(
        rep["decodedFrames"].as_u64().is_some_and(|n| n >= 100),
        "frames decoded",
        || format!("{rep}"),
    );
    for kind in ["document", "playlists", "media"] {
        let p = &rep["protocols"][kind];
        f.check(
            p.as_object()
                .is_some_and(|o| !o.is_empty() && o.keys().all(|k| k == "h2")),
            "every request over HTTP/2 (nextHopProtocol h2)",
            || format!("{kind}: {p}"),
        );
    }
    f.check(
        rep["protocols"]["playlists"]["h2"]
            .as_u64()
            .is_some_and(|n| n >= 5),
        "playlist reloads seen",
        || format!("{}", rep["protocols"]),
    );
    f.check(
        rep["fatal"].as_array().is_some_and(|a| a.is_empty()),
        "no fatal hls.js error",
        || format!("{}", rep["fatal"]),
    );
    if !f.is_empty() {
        eprintln!("console: {}", v["console"]);
    }
    f.assert_empty("browser_plays_over_https_and_http2");
}

/// `systemctl reload` sends SIGHUP whether or not `[tls]` is set: a node
/// serving plain HTTP must take it without ending (the signal's default).
#[test]
fn sighup_without_tls_leaves_the_node_running() {
    let mut node = Node::start(NodeConfig::default());
    signal_hup(&node);
    signal_hup(&node);
    std::thread::sleep(Duration::from_millis(500));
    assert!(node.is_running(), "the node ended on SIGHUP");
    assert_eq!(node.http.get(&node.url("/healthz")).status, 200);
    let logged = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        node.log()
            .contains("no [tls] certificate to reload")
            .then_some(())
    });
    assert!(logged.is_some(), "the SIGHUP is logged");
}
