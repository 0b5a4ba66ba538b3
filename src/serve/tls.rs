//! HTTPS on the player port: certificate and key files, ALPN (h2, http/1.1),
//! reloaded on SIGHUP.
//!
//! Owns the `[tls]` files and the certificate every new handshake is given;
//! the listener (`listener.rs`) owns the sockets and their deadlines. Must
//! never put private key material in a log line or an error, and never let
//! a bad file on reload take the served certificate away: the old one stays
//! until a good pair replaces it.

use crate::metrics::TLS_METRICS;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

pub use crate::config::TlsConfig;

impl TlsConfig {
    /// Whether HTTPS is asked for (both files set).
    pub fn is_enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty() && !self.key.as_os_str().is_empty()
    }

    /// Both files or neither: one alone is a mistake that must not quietly
    /// serve plain HTTP.
    pub fn validate(&self) -> Result<(), TlsError> {
        match (
            self.cert.as_os_str().is_empty(),
            self.key.as_os_str().is_empty(),
        ) {
            (false, true) => Err(TlsError::Incomplete {
                set: "cert",
                missing: "key",
            }),
            (true, false) => Err(TlsError::Incomplete {
                set: "key",
                missing: "cert",
            }),
            _ => Ok(()),
        }
    }
}

/// Why the `[tls]` files cannot be served. Names files, never their
/// contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error(
        "tls.{set} is set but tls.{missing} is empty: set both (HTTPS on the player port) or neither (plain HTTP)"
    )]
    Incomplete {
        set: &'static str,
        missing: &'static str,
    },
    #[error("reading the TLS {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS certificate {}: {problem}", path.display())]
    Certificate { path: PathBuf, problem: String },
    #[error("TLS private key {}: {problem}", path.display())]
    Key { path: PathBuf, problem: String },
    #[error(
        "the TLS private key {} does not match the certificate {}",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// ALPN, in the server's order of preference: HTTP/2 is what Safari needs
/// for LL-HLS; HTTP/1.1 for every client that does not offer it.
pub const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The player port's TLS: the acceptor every connection goes through and
/// the certificate it serves, swapped in place by [`Tls::reload`]. Cheap to
/// clone: clones share the certificate.
#[derive(Clone)]
pub struct Tls {
    files: Arc<TlsConfig>,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// `None` when `[tls]` is empty (plain HTTP); the loaded pair otherwise,
    /// or why it cannot be served.
    pub fn load(cfg: &TlsConfig) -> Result<Option<Tls>, TlsError> {
        cfg.validate()?;
        if !cfg.is_enabled() {
            return Ok(None);
        }
        let provider = Arc::new(aws_lc_rs::default_provider());
        let loaded = load_pair(cfg, &provider)?;
        loaded.publish(cfg, "loaded");
        let current = Arc::new(Current {
            key: RwLock::new(Arc::new(loaded.key)),
            provider: provider.clone(),
        });
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        Ok(Some(Tls {
            files: Arc::new(cfg.clone()),
            current,
            acceptor: TlsAcceptor::from(Arc::new(server)),
        }))
    }

    /// Reads the files again and serves the new pair to every handshake from
    /// now on; connections already open keep theirs. On any error the old
    /// pair stays (counted in `rungs_tls_reloads_total{result="error"}`).
    /// Blocking file reads: call it off the async threads.
    pub fn reload(&self) -> Result<(), TlsError> {
        match load_pair(&self.files, &self.current.provider) {
            Ok(loaded) => {
                loaded.publish(&self.files, "reloaded");
                // A poisoned lock only means a reader panicked mid-clone of
                // an Arc: the value inside is whole.
                *self.current.key.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded.key);
                TLS_METRICS.reloads.with_label_values(&["ok"]).inc();
                Ok(())
            }
            Err(e) => {
                TLS_METRICS.reloads.with_label_values(&["error"]).inc();
                Err(e)
            }
        }
    }

    /// The leaf certificate new handshakes get (DER).
    pub fn served_certificate(&self) -> Vec<u8> {
        // Never empty: a CertifiedKey is only built from a non-empty chain
        // (load_pair).
        let key = self.current.get();
        key.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Reloads `tls` on every SIGHUP (what certbot's and most ACME clients'
/// deploy hooks send, and `systemctl reload`). A failed reload is logged and
/// the node goes on with the certificate it had. Without `[tls]` (`None`)
/// the signal is caught all the same: its default action would end the
/// node, and every stream on it, on a routine `systemctl reload`.
///
/// The handler is installed when this is called (inside the runtime), not
/// when the task first runs: from then on a SIGHUP can no longer end the
/// process.
pub fn reload_on_sighup(tls: Option<Tls>) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let hup = signal(SignalKind::hangup());
    async move {
        let mut hup = match hup {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: the TLS certificate will not be reloaded");
                return;
            }
        };
        while hup.recv().await.is_some() {
            let Some(t) = tls.clone() else {
                tracing::info!("SIGHUP: no [tls] certificate to reload");
                continue;
            };
            match tokio::task::spawn_blocking(move || t.reload()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "TLS certificate reload failed; still serving the previous certificate"
                ),
                Err(e) => tracing::error!(error = %e, "TLS certificate reload task failed"),
            }
        }
    }
}

/// The pair handshakes get now.
#[derive(Debug)]
struct Current {
    key: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl Current {
    fn get(&self) -> Arc<CertifiedKey> {
        self.key.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResolvesServerCert for Current {
    /// One certificate for every name: a node serves one public host, and
    /// clients reaching it by IP address send no SNI at all.
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

struct Loaded {
    key: CertifiedKey,
    not_after: Option<i64>,
}

impl Loaded {
    fn publish(&self, files: &TlsConfig, what: &'static str) {
        let expires = self.not_after.unwrap_or(0);
        if let Some(t) = self.not_after {
            TLS_METRICS.certificate_expiry.set(t as f64);
        }
        let now = unix_now();
        if self.not_after.is_some_and(|t| t <= now) {
            tracing::warn!(cert = %files.cert.display(), expires_unix = expires, "the TLS certificate {what} has expired: clients will refuse it");
        } else {
            tracing::info!(cert = %files.cert.display(), expires_unix = expires, chain = self.key.cert.len(), "TLS certificate {what}");
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// What went wrong in a PEM file, without quoting it: pki-types' own
/// messages repeat lines of the file, and the key file's lines are secret.
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64",
        pem::Error::NoItemsFound => "no PEM section of the expected kind",
        pem::Error::SectionTooLarge => "a PEM section is too large",
        _ => "not valid PEM",
    }
}

fn load_pair(cfg: &TlsConfig, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let cert_err = |problem: String| TlsError::Certificate {
        path: cfg.cert.clone(),
        problem,
    };
    let key_err = |problem: String| TlsError::Key {
        path: cfg.key.clone(),
        problem,
    };
    let cert_pem = read("certificate", &cfg.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(pem_problem(&e).into()))?;
    if chain.is_empty() {
        return Err(cert_err(
            "no PEM CERTIFICATE section (expected the chain, leaf first)".into(),
        ));
    }
    let key_pem = read("private key", &cfg.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            key_err("no unencrypted private key (a PKCS#8, PKCS#1 or SEC1 PEM section)".into())
        }
        e => key_err(pem_problem(&e).into()),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        // rustls's message names the key types it tried, nothing of the key.
        .map_err(|e| key_err(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::Mismatch {
                cert: cfg.cert.clone(),
                key: cfg.key.clone(),
            });
        }
        // The key type cannot say its public half: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(cert_err(format!("the leaf certificate: {e}"))),
    }
    let not_after = certified.cert.first().and_then(|c| not_after(c));
    Ok(Loaded {
        key: certified,
        not_after,
    })
}

/// One DER element: (tag, contents, what follows). `None` when truncated or
/// longer than four length bytes.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The certificate's notAfter as Unix seconds, for the expiry metric.
/// RFC 5280 4.1: Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
/// [0] version OPTIONAL, serialNumber, signature, issuer, validity
/// SEQUENCE { notBefore, notAfter }, ... }, ... }. Five headers walked by
/// hand rather than an X.509 parser for one field.
fn not_after(cert: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = tlv(cert)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..3 {
        // serialNumber, signature, issuer
        tbs = tlv(tbs)?.2;
    }
    let (SEQUENCE, validity, _) = tlv(tbs)? else {
        return None;
    };
    let not_before_rest = tlv(validity)?.2;
    let (tag, time, _) = tlv(not_before_rest)?;
    der_time(tag, time)
}

/// RFC 5280 4.1.2.5: UTCTime `YYMMDDHHMMSSZ` (YY >= 50 is 19YY) or
/// GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn der_time(tag: u8, s: &[u8]) -> Option<i64> {
    let digits = |b: &[u8]| -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, rest) = match (tag, s.len()) {
        (0x17, 13) => {
            let yy = digits(&s[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (0x18, 15) => (digits(&s[..4])?, &s[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let f = |i: usize| digits(&rest[i..i + 2]);
    let (month, day, h, m, sec) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
pub(crate) mod tests {
    // The `unwrap()`s below are the tests' own: on certificates, files and
    // loopback sockets each test makes itself. No peer's bytes reach them.
    use super::*;
    use rcgen::{CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A test CA and leaves it signs for 127.0.0.1 and localhost, written as
    /// PEM files in a temporary directory.
    pub(crate) struct TestPki {
        pub dir: tempfile::TempDir,
        pub ca_pem: String,
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    impl TestPki {
        pub(crate) fn new() -> TestPki {
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca.distinguished_name
                .push(DnType::CommonName, "rungs test CA");
            let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
            TestPki {
                dir: tempfile::tempdir().unwrap(),
                ca_pem: issuer.pem(),
                issuer,
            }
        }

        /// A leaf named `cn`; returns (cert PEM, key PEM, cert DER).
        pub(crate) fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
            let mut p =
                CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &*self.issuer).unwrap();
            (cert.pem(), key.serialize_pem(), cert.der().to_vec())
        }

        /// Writes a leaf as `name.crt`/`name.key`; returns its config and DER.
        pub(crate) fn write_leaf(&self, name: &str) -> (TlsConfig, Vec<u8>) {
            let (cert, key, der) = self.leaf(name);
            let cfg = self.files(name);
            std::fs::write(&cfg.cert, cert).unwrap();
            std::fs::write(&cfg.key, key).unwrap();
            (cfg, der)
        }

        pub(crate) fn files(&self, name: &str) -> TlsConfig {
            TlsConfig {
                cert: self.dir.path().join(format!("{name}.crt")),
                key: self.dir.path().join(format!("{name}.key")),
            }
        }

        /// A rustls client that trusts only this CA and offers `alpn`.
        pub(crate) fn connector(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
        }
    }

    /// Serves one TLS handshake per connection on a local port, answering
    /// "ok" after it: enough to see which certificate is served.
    async fn tls_echo(tls: Tls) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = tls.acceptor().clone();
                tokio::spawn(async move {
                    if let Ok(mut s) = acceptor.accept(s).await {
                        let _ = s.write_all(b"ok").await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        addr
    }

    /// The leaf a fresh connection is shown.
    async fn peer_leaf(pki: &TestPki, addr: std::net::SocketAddr) -> Vec<u8> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut s = pki.connector(&[b"h2"]).connect(name, tcp).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        assert_eq!(buf, b"ok");
        let (_, conn) = s.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(ALPN_H2), "ALPN h2 negotiated");
        conn.peer_certificates().unwrap()[0].to_vec()
    }

    #[test]
    fn empty_config_is_plain_http_and_half_a_pair_is_an_error() {
        assert!(Tls::load(&TlsConfig::default()).unwrap().is_none());
        let only_cert = TlsConfig {
            cert: "/etc/rungs/cert.pem".into(),
            key: PathBuf::new(),
        };
        let e = Tls::load(&only_cert).unwrap_err().to_string();
        assert!(e.contains("tls.cert is set but tls.key is empty"), "{e}");
        let only_key = TlsConfig {
            cert: PathBuf::new(),
            key: "/etc/rungs/key.pem".into(),
        };
        assert!(only_key.validate().is_err());
        assert!(!only_key.is_enabled());
    }

    #[test]
    fn a_good_pair_loads_and_is_served() {
        let pki = TestPki::new();
        let (cfg, der) = pki.write_leaf("a");
        let tls = Tls::load(&cfg).unwrap().expect("enabled");
        assert_eq!(tls.served_certificate(), der);
        // The chain may carry the CA after the leaf.
        std::fs::write(
            &cfg.cert,
            std::fs::read_to_string(&cfg.cert).unwrap() + &pki.ca_pem,
        )
        .unwrap();
        let tls = Tls::load(&cfg).unwrap().expect("enabled");
        assert_eq!(tls.current.get().cert.len(), 2);
    }

    #[test]
    fn bad_files_are_named_and_the_key_is_never_quoted() {
        let pki = TestPki::new();
        let (good, _) = pki.write_leaf("good");
        let key_pem = std::fs::read_to_string(&good.key).unwrap();

        let missing = TlsConfig {
            cert: pki.dir.path().join("nope.crt"),
            key: good.key.clone(),
        };
        let e = Tls::load(&missing).unwrap_err().to_string();
        assert!(
            e.contains("reading the TLS certificate") && e.contains("nope.crt"),
            "{e}"
        );

        let not_pem = pki.files("garbage");
        std::fs::write(&not_pem.cert, "hello\n").unwrap();
        std::fs::write(&not_pem.key, &key_pem).unwrap();
        let e = Tls::load(&not_pem).unwrap_err().to_string();
        assert!(
            e.contains("garbage.crt") && e.contains("no PEM CERTIFICATE"),
            "{e}"
        );

        // A key file whose base64 is broken mid-way: the error names the
        // file, and no line of it.
        let broken = pki.files("broken");
        std::fs::copy(&good.cert, &broken.cert).unwrap();
        let body: Vec<&str> = key_pem.lines().collect();
        let secret_line = body[1];
        let mangled = key_pem.replace(secret_line, &format!("{}!!", &secret_line[..20]));
        std::fs::write(&broken.key, &mangled).unwrap();
        let e = Tls::load(&broken).unwrap_err();
        let msg = format!("{e} {e:?}");
        assert!(msg.contains("broken.key"), "{msg}");
        assert!(!msg.contains(&secret_line[..20]), "key material in {msg}");

        // A certificate where the key belongs.
        let swapped = TlsConfig {
            cert: good.cert.clone(),
            key: good.cert.clone(),
        };
        let e = Tls::load(&swapped).unwrap_err().to_string();
        assert!(
            e.contains("TLS private key") && e.contains("no unencrypted private key"),
            "{e}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let pki = TestPki::new();
        let (a, _) = pki.write_leaf("a");
        let (b, _) = pki.write_leaf("b");
        let mixed = TlsConfig {
            cert: a.cert,
            key: b.key,
        };
        let e = Tls::load(&mixed).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert!(
            e.to_string().contains("b.key") && e.to_string().contains("a.crt"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn reload_swaps_the_served_certificate_and_a_bad_one_keeps_the_old() {
        let pki = TestPki::new();
        let (cfg, first) = pki.write_leaf("live");
        let tls = Tls::load(&cfg).unwrap().expect("enabled");
        let addr = tls_echo(tls.clone()).await;
        assert_eq!(peer_leaf(&pki, addr).await, first);

        let (second_cert, second_key, second) = pki.leaf("renewed");
        std::fs::write(&cfg.cert, &second_cert).unwrap();
        std::fs::write(&cfg.key, &second_key).unwrap();
        let ok0 = TLS_METRICS.reloads.with_label_values(&["ok"]).get();
        tls.reload().unwrap();
        assert!(TLS_METRICS.reloads.with_label_values(&["ok"]).get() > ok0);
        assert_eq!(
            peer_leaf(&pki, addr).await,
            second,
            "new connections get the new certificate"
        );

        // Half-written renewal: a new certificate beside the old key.
        let (third_cert, _, _) = pki.leaf("third");
        std::fs::write(&cfg.cert, &third_cert).unwrap();
        let err0 = TLS_METRICS.reloads.with_label_values(&["error"]).get();
        let e = tls.reload().unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert!(TLS_METRICS.reloads.with_label_values(&["error"]).get() > err0);
        assert_eq!(
            peer_leaf(&pki, addr).await,
            second,
            "a bad reload keeps the old certificate"
        );

        // A file gone altogether: the same.
        std::fs::remove_file(&cfg.key).unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::Read { .. })));
        assert_eq!(peer_leaf(&pki, addr).await, second);
    }

    #[test]
    fn not_after_is_read_from_the_leaf() {
        let pki = TestPki::new();
        let mut p = CertificateParams::new(vec!["localhost".into()]).unwrap();
        p.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &*pki.issuer).unwrap();
        // 2031-07-15T00:00:00Z
        assert_eq!(not_after(cert.der()), Some(1_941_840_000));
        // Past 2049, RFC 5280 switches to GeneralizedTime.
        p.not_after = rcgen::date_time_ymd(2051, 1, 1);
        let cert = p.signed_by(&key, &*pki.issuer).unwrap();
        assert_eq!(not_after(cert.der()), Some(2_556_143_999 + 1));
        assert_eq!(not_after(b"\x30\x03\x02\x01"), None);
        assert_eq!(der_time(0x17, b"991231235959Z"), Some(946_684_799));
    }
}
