//! Who may watch. Every channel's rules (allowed origins, networks,
//! countries: `rules.rs`) and, for private channels, playback tokens (ES384
//! JWTs signed by a registered playback key); served playlists are
//! rewritten so every URI they name carries the token on to the next
//! request.
//!
//! Owns the per-node view of the registry's private flags, channel rules,
//! playback keys and revoked viewers, a bounded cache of verified tokens and
//! the set of spent single-use ids. Must never log, count or echo a token or
//! a key, nor log a client's address: refusals name a reason and nothing
//! else. The package store stays token-agnostic; tokens live only in the
//! bytes this module hands out.

use crate::registry::{MAX_VIEWER_ID, Policy, Registry, RegistryError};
use crate::serve::geo::Locator;
use crate::serve::rules::{Breach, PolicyError, Rules};
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Response header that names why a request was refused (403).
pub const REFUSAL_HEADER: &str = "x-rungs-refusal";
/// Query parameter that carries the token on every URL of a private channel.
pub const TOKEN_PARAM: &str = "token";

/// How stale the node's view of the registry may get: a channel made
/// private, its rules changed, a key deleted or a viewer revoked by the CLI
/// takes effect within this (at once through the API).
const REFRESH: Duration = Duration::from_secs(1);
/// Verified tokens kept; a player's requests reuse one token for minutes,
/// so a small map spares nearly every signature check.
const MAX_VERIFIED: usize = 4096;
/// Single-use ids remembered until their token expires; past this many
/// unexpired ones a new single-use token is refused rather than forgetting
/// one (forgetting would let it be replayed).
const MAX_SPENT: usize = 100_000;

/// Why a player request was refused; `as_str` is the value of
/// [`REFUSAL_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `token` query parameter.
    Missing,
    /// Not a JWT, not ES384, a claim of the wrong type, no `exp`, or a
    /// viewer id over 40 characters.
    Invalid,
    /// `exp` is past.
    Expired,
    /// No registered key verifies the signature (a deleted or never
    /// registered key included).
    BadSignature,
    /// The token is for another channel.
    WrongChannel,
    /// The channel's allowed origins, or the token's, do not list the
    /// request's (or it named none).
    Origin,
    /// The client's address is in a network the channel denies, or outside
    /// every one it allows.
    Network,
    /// The client's country is denied, or not among the allowed ones, or
    /// unknown where the channel allows only some.
    Region,
    /// The channel's stored rules do not read (a hand-edited database):
    /// nobody plays it until they are set again.
    Policy,
    /// The token's viewer was revoked after (or when) it was issued.
    Revoked,
    /// A single-use token presented on the multivariant playlist again.
    Used,
    /// The operator's play hook said no (or did not answer, with
    /// `hooks.on_timeout = "deny"`).
    Hook,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
            Refusal::Expired => "expired",
            Refusal::BadSignature => "bad signature",
            Refusal::WrongChannel => "wrong channel",
            Refusal::Origin => "origin",
            Refusal::Network => "network",
            Refusal::Region => "region",
            Refusal::Policy => "policy",
            Refusal::Revoked => "revoked",
            Refusal::Used => "used",
            Refusal::Hook => "hook",
        }
    }
}

/// The claims rungs reads. Unknown claims are ignored, so a token minted
/// for a managed service's extra claims still parses.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Claims {
    /// The channel id the token is for.
    pub channel: String,
    /// Expiry, unix seconds (required).
    pub exp: u64,
    /// Issued at, unix seconds; what a viewer revocation is compared with.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Allowed origins: one origin, several separated by commas or spaces,
    /// or `*`. Absent: any.
    #[serde(default, rename = "access-control-allow-origin")]
    pub origin: Option<String>,
    /// Viewer id (at most 40 characters), what `viewer revoke` names.
    #[serde(default, rename = "viewer-id")]
    pub viewer_id: Option<String>,
    /// Tallest video rung (pixels) listed in the multivariant playlist.
    #[serde(default, rename = "max-height")]
    pub max_height: Option<u32>,
    /// The multivariant playlist is served once for this id.
    #[serde(default, rename = "single-use-id")]
    pub single_use_id: Option<String>,
}

/// What an accepted token allows beyond plain playback.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    pub max_height: Option<u32>,
    /// The token's claims as rungs read them, for the play hook.
    pub claims: serde_json::Value,
}

/// A request for a private channel's file, as far as access cares.
pub struct Request<'a> {
    pub channel: &'a str,
    pub token: Option<&'a str>,
    /// The request's `Origin`, else the origin of its `Referer`.
    pub origin: Option<&'a str>,
    /// Unix seconds.
    pub now: u64,
    /// The multivariant playlist: where single-use ids are spent.
    pub multivariant: bool,
}

impl From<Breach> for Refusal {
    fn from(b: Breach) -> Self {
        match b {
            Breach::Origin => Refusal::Origin,
            Breach::Network => Refusal::Network,
            Breach::Region => Refusal::Region,
            Breach::Unreadable => Refusal::Policy,
        }
    }
}

/// What CORS may answer for a channel's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cors {
    /// No allowed origins: `*`.
    Any,
    /// The request's origin is allowed: echo it.
    Echo,
    /// Allowed origins that do not include the request's: no CORS header.
    Withhold,
}

/// The registry as the serve layer needs it, read whole on each refresh.
#[derive(Default)]
struct Snapshot {
    private: HashSet<String>,
    /// Channels whose policy restricts playback.
    rules: HashMap<String, Arc<Rules>>,
    /// (key id, PEM as stored, verifying key).
    keys: Vec<(String, String, DecodingKey)>,
    revoked: HashMap<String, u64>,
}

pub struct Access {
    registry: Option<Arc<Registry>>,
    locator: Locator,
    snapshot: RwLock<Arc<Snapshot>>,
    verified: Mutex<HashMap<String, Arc<Claims>>>,
    spent: Mutex<HashMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent across a panic (each update is one insert
    // or clear), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Access {
    /// Reads the registry now (blocking: SQLite) and, inside a tokio
    /// runtime, re-reads it every [`REFRESH`] on the blocking pool, so
    /// requests never wait on SQLite and CLI changes apply within a second.
    pub fn new(registry: Arc<Registry>, locator: Locator) -> Arc<Self> {
        let access = Arc::new(Self::empty(Some(registry), locator));
        if let Err(e) = access.reload() {
            tracing::error!(error = %e, "could not read private channels from the registry");
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let me = Arc::downgrade(&access);
            rt.spawn(async move {
                let mut every = tokio::time::interval(REFRESH);
                loop {
                    every.tick().await;
                    let Some(access) = me.upgrade() else {
                        return;
                    };
                    let read = tokio::task::spawn_blocking(move || access.reload()).await;
                    if let Ok(Err(e)) = read {
                        tracing::warn!(error = %e, "could not re-read private channels from the registry");
                    }
                }
            });
        }
        access
    }

    /// No registry: every channel public and unrestricted until
    /// [`Access::set`] and [`Access::set_policy`] say otherwise.
    pub fn detached() -> Arc<Self> {
        Self::detached_with(Locator::direct())
    }

    /// [`Access::detached`] with addresses and countries from `locator`.
    pub fn detached_with(locator: Locator) -> Arc<Self> {
        Arc::new(Self::empty(None, locator))
    }

    fn empty(registry: Option<Arc<Registry>>, locator: Locator) -> Self {
        Access {
            registry,
            locator,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            verified: Mutex::new(HashMap::new()),
            spent: Mutex::new(HashMap::new()),
        }
    }

    /// Re-reads private flags, channel rules, keys and revocations from the
    /// registry (blocking). The API calls it after each change so it applies
    /// at once.
    pub fn reload(&self) -> Result<(), RegistryError> {
        let Some(reg) = &self.registry else {
            return Ok(());
        };
        let private = reg.private_channels()?.into_iter().collect();
        let before = self.snapshot();
        let mut rules = HashMap::new();
        for (channel, policy) in reg.policies()? {
            let compiled = match Rules::compile(&policy) {
                Ok(None) => continue,
                Ok(Some(r)) => r,
                Err(e) => {
                    // Once per change, not on every refresh.
                    if !before.rules.contains_key(&channel) {
                        tracing::warn!(channel = %channel, error = %e, "stored channel policy does not read; the channel refuses every player until it is set again");
                    }
                    Rules::unreadable()
                }
            };
            rules.insert(channel, Arc::new(compiled));
        }
        let keys = reg
            .playback_keys()?
            .into_iter()
            .filter_map(|k| match decoding_key(&k.public_pem) {
                Ok(d) => Some((k.id, k.public_pem, d)),
                Err(_) => {
                    tracing::warn!(key = %k.id, "stored playback key is not an ECDSA P-384 public key; ignored");
                    None
                }
            })
            .collect();
        let revoked = reg
            .revocations()?
            .into_iter()
            .map(|r| (r.viewer_id, r.revoked_at))
            .collect();
        self.install(Snapshot {
            private,
            rules,
            keys,
            revoked,
        });
        Ok(())
    }

    fn install(&self, next: Snapshot) {
        let mut cur = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        let same_keys = cur.keys.len() == next.keys.len()
            && cur
                .keys
                .iter()
                .zip(&next.keys)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1);
        if !same_keys {
            // A deleted key must stop verifying tokens already cached.
            lock(&self.verified).clear();
        }
        *cur = Arc::new(next);
    }

    /// For tests and the detached form: the private channels and keys (PEM)
    /// to use, replacing what was there.
    pub fn set(
        &self,
        private: &[&str],
        keys: &[(&str, &str)],
        revoked: &[(&str, u64)],
    ) -> Result<(), KeyError> {
        let keys = keys
            .iter()
            .map(|(id, pem)| Ok((id.to_string(), pem.to_string(), decoding_key(pem)?)))
            .collect::<Result<_, KeyError>>()?;
        let rules = self.snapshot().rules.clone();
        self.install(Snapshot {
            private: private.iter().map(|s| s.to_string()).collect(),
            rules,
            keys,
            revoked: revoked.iter().map(|(v, t)| (v.to_string(), *t)).collect(),
        });
        Ok(())
    }

    /// For tests and the detached form: `channel`'s rules, replacing its
    /// previous ones.
    pub fn set_policy(&self, channel: &str, policy: &Policy) -> Result<(), PolicyError> {
        let compiled = Rules::compile(policy)?;
        let cur = self.snapshot();
        let mut rules = cur.rules.clone();
        match compiled {
            Some(r) => rules.insert(channel.to_string(), Arc::new(r)),
            None => rules.remove(channel),
        };
        self.install(Snapshot {
            private: cur.private.clone(),
            rules,
            keys: cur
                .keys
                .iter()
                .map(|(id, pem, key)| (id.clone(), pem.clone(), key.clone()))
                .collect(),
            revoked: cur.revoked.clone(),
        });
        Ok(())
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_private(&self, channel: &str) -> bool {
        self.snapshot().private.contains(channel)
    }

    /// Whether this node can tell a client's country (it has a GeoIP database).
    pub fn knows_countries(&self) -> bool {
        self.locator.has_countries()
    }

    /// The client's address: the socket peer, or from a trusted proxy what
    /// its address header says. `peer` is none only without a socket
    /// (in-process tests).
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        peer.map(|p| self.locator.client(p, headers))
    }

    /// Checks a channel's rules (allowed origins, networks, countries); for
    /// every channel, public or private, before any token.
    pub fn admit(
        &self,
        channel: &str,
        client: Option<IpAddr>,
        origin: Option<&str>,
    ) -> Result<(), Refusal> {
        match self.snapshot().rules.get(channel) {
            None => Ok(()),
            Some(r) => r
                .check(client, origin, &self.locator)
                .map_err(Refusal::from),
        }
    }

    /// What CORS may say on `channel`'s response to a request from `origin`.
    pub fn cors(&self, channel: &str, origin: Option<&str>) -> Cors {
        match self.snapshot().rules.get(channel) {
            Some(r) if r.limits_origins() => {
                if r.origin_allowed(origin) {
                    Cors::Echo
                } else {
                    Cors::Withhold
                }
            }
            _ => Cors::Any,
        }
    }

    /// Checks a request for a private channel. Public channels never come here.
    pub fn check(&self, req: &Request<'_>) -> Result<Grant, Refusal> {
        let snap = self.snapshot();
        let token = req
            .token
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Missing)?;
        let claims = self.verify(&snap, token)?;
        if claims.exp <= req.now {
            return Err(Refusal::Expired);
        }
        if claims.channel != req.channel {
            return Err(Refusal::WrongChannel);
        }
        if let Some(allowed) = &claims.origin
            && !origin_allowed(allowed, req.origin)
        {
            return Err(Refusal::Origin);
        }
        if let Some(viewer) = &claims.viewer_id
            && let Some(&at) = snap.revoked.get(viewer)
            // Same-second tokens are refused too: a second is the
            // registry's resolution, and refusing errs on the safe side.
            && claims.iat.is_none_or(|iat| iat <= at)
        {
            return Err(Refusal::Revoked);
        }
        if req.multivariant
            && let Some(id) = &claims.single_use_id
        {
            self.spend(id, claims.exp, req.now)?;
        }
        Ok(Grant {
            max_height: claims.max_height,
            claims: serde_json::to_value(&*claims).unwrap_or_default(),
        })
    }

    fn spend(&self, id: &str, exp: u64, now: u64) -> Result<(), Refusal> {
        let mut spent = lock(&self.spent);
        if spent.get(id).is_some_and(|&until| until > now) {
            return Err(Refusal::Used);
        }
        if spent.len() >= MAX_SPENT {
            spent.retain(|_, until| *until > now);
            if spent.len() >= MAX_SPENT {
                return Err(Refusal::Used);
            }
        }
        spent.insert(id.to_string(), exp);
        Ok(())
    }

    /// The token's claims once a registered key verifies it; cached by the
    /// token's bytes (expiry, channel, origin and revocation are still
    /// checked on every request).
    fn verify(&self, snap: &Snapshot, token: &str) -> Result<Arc<Claims>, Refusal> {
        if let Some(c) = lock(&self.verified).get(token) {
            return Ok(c.clone());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Invalid)?;
        if header.alg != Algorithm::ES384 {
            return Err(Refusal::Invalid);
        }
        let mut validation = Validation::new(Algorithm::ES384);
        // Expiry is checked by the caller against its own `now`, without
        // leeway; everything else about the claims is ours to read.
        validation.validate_exp = false;
        validation.required_spec_claims = HashSet::from(["exp".to_string()]);
        validation.leeway = 0;
        // A `kid` that names a registered key picks it; any other (or none)
        // means trying each registered key.
        let named: Vec<&DecodingKey> = snap
            .keys
            .iter()
            .filter(|k| header.kid.as_deref() == Some(k.0.as_str()))
            .map(|k| &k.2)
            .collect();
        let candidates: Vec<&DecodingKey> = if named.is_empty() {
            snap.keys.iter().map(|k| &k.2).collect()
        } else {
            named
        };
        let mut refusal = Refusal::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    if claims
                        .viewer_id
                        .as_ref()
                        .is_some_and(|v| v.chars().count() > MAX_VIEWER_ID)
                    {
                        return Err(Refusal::Invalid);
                    }
                    let claims = Arc::new(claims);
                    let mut cache = lock(&self.verified);
                    if cache.len() >= MAX_VERIFIED {
                        // Cheaper than tracking age: the busy tokens come
                        // back within a request and are verified once more.
                        cache.clear();
                    }
                    cache.insert(token.to_string(), claims.clone());
                    return Ok(claims);
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    match e.kind() {
                        ErrorKind::InvalidSignature
                        | ErrorKind::InvalidEcdsaKey
                        | ErrorKind::InvalidKeyFormat => {}
                        // The signature verified but the claims did not
                        // parse (no exp, wrong types): the same for every key.
                        _ => refusal = Refusal::Invalid,
                    }
                }
            }
        }
        Err(refusal)
    }
}

/// Whether the request's origin is among `allowed` (exact match, `*`: any).
/// A request without an origin passes only `*`: the check is strict.
fn origin_allowed(allowed: &str, origin: Option<&str>) -> bool {
    allowed
        .split([',', ' '])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .any(|a| a == "*" || Some(a) == origin)
}

/// The request's `Origin`, else the origin of its `Referer`: the page that
/// asked, as far as the browser tells.
pub fn request_origin(headers: &HeaderMap) -> Option<&str> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    header(header::ORIGIN).or_else(|| header(header::REFERER).and_then(referer_origin))
}

/// The origin (`scheme://host[:port]`) of a `Referer` URL.
pub fn referer_origin(referer: &str) -> Option<&str> {
    let rest = referer.find("://")? + 3;
    let end = referer[rest..]
        .find(['/', '?', '#'])
        .map_or(referer.len(), |i| rest + i);
    Some(&referer[..end])
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key (-----BEGIN PUBLIC KEY-----)")]
    NotPem,
    #[error("not an ECDSA P-384 (secp384r1) public key")]
    NotP384,
    #[error("could not generate a key pair")]
    Generate,
}

/// DER prefix of an uncompressed ECDSA P-384 SubjectPublicKeyInfo
/// (RFC 5480): SEQUENCE { SEQUENCE { id-ecPublicKey, secp384r1 }, BIT STRING
/// of 98 bytes }. Every such key is this prefix and the 97-byte point.
const P384_SPKI_PREFIX: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

/// The uncompressed point (97 bytes, 0x04 || x || y) of a P-384 SPKI PEM.
fn p384_point(pem: &str) -> Result<Vec<u8>, KeyError> {
    let der = pem_der(pem, "PUBLIC KEY").ok_or(KeyError::NotPem)?;
    match der.strip_prefix(&P384_SPKI_PREFIX[..]) {
        Some(point) if point.len() == 97 && point[0] == 0x04 => Ok(point.to_vec()),
        _ => Err(KeyError::NotP384),
    }
}

fn decoding_key(pem: &str) -> Result<DecodingKey, KeyError> {
    Ok(DecodingKey::from_ec_der(&p384_point(pem)?))
}

/// Checks an imported public key and returns it normalized (one PEM, 64
/// columns, trailing newline), what the registry stores.
pub fn normalize_public_pem(pem: &str) -> Result<String, KeyError> {
    let point = p384_point(pem)?;
    let mut der = P384_SPKI_PREFIX.to_vec();
    der.extend_from_slice(&point);
    Ok(to_pem("PUBLIC KEY", &der))
}

/// A fresh playback key pair: (private key PKCS#8 PEM, public key SPKI PEM).
/// The private half goes to the operator once and is never stored.
pub fn generate_key_pair() -> Result<(String, String), KeyError> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let pair =
        EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).map_err(|_| KeyError::Generate)?;
    let private = pair.to_pkcs8v1().map_err(|_| KeyError::Generate)?;
    let public = pair.public_key().as_der().map_err(|_| KeyError::Generate)?;
    Ok((
        to_pem("PRIVATE KEY", private.as_ref()),
        to_pem("PUBLIC KEY", public.as_ref()),
    ))
}

/// Signs `claims` as an ES384 playback token with a private key as
/// `generate_key_pair` prints it (PKCS#8 PEM); `kid` names the registered
/// key. What an operator's token service does, here for tests and tools.
pub fn sign_token(
    private_pem: &str,
    kid: Option<&str>,
    claims: &serde_json::Value,
) -> Result<String, KeyError> {
    let der = pem_der(private_pem, "PRIVATE KEY").ok_or(KeyError::NotPem)?;
    let key = jsonwebtoken::EncodingKey::from_ec_der(&der);
    let mut header = jsonwebtoken::Header::new(Algorithm::ES384);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).map_err(|_| KeyError::NotP384)
}

/// The DER inside a PEM block labelled `label`.
fn pem_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix(&format!("-----BEGIN {label}-----"))?
        .strip_suffix(&format!("-----END {label}-----"))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Appends the token to every URI a playlist names: each URI line and each
/// `URI="..."` attribute (EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT,
/// EXT-X-RENDITION-REPORT, EXT-X-MEDIA), so a player that only follows
/// URIs sends it with every request.
pub fn rewrite_playlist(text: &str, token: &str) -> String {
    let param = format!("{TOKEN_PARAM}={}", encode_query(token));
    let with = |uri: &str| {
        let sep = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{sep}{param}")
    };
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => match b.strip_suffix('\r') {
                Some(b2) => (b2, "\r\n"),
                None => (b, "\n"),
            },
            None => (line, ""),
        };
        if body.is_empty() {
            out.push_str(line);
            continue;
        }
        if !body.starts_with('#') {
            out.push_str(&with(body));
        } else {
            let mut rest = body;
            while let Some(i) = rest.find("URI=\"") {
                let start = i + 5;
                let Some(len) = rest[start..].find('"') else {
                    break;
                };
                out.push_str(&rest[..start]);
                out.push_str(&with(&rest[start..start + len]));
                rest = &rest[start + len..];
            }
            out.push_str(rest);
        }
        out.push_str(end);
    }
    out
}

/// Leaves out of a multivariant playlist the variants taller than
/// `max_height` (their EXT-X-STREAM-INF and URI line). If that would leave
/// none, the shortest stays, so the token still plays.
pub fn limit_height(text: &str, max_height: u32) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let height = |l: &str| -> Option<u32> {
        let r = l.split("RESOLUTION=").nth(1)?;
        let r = r.split(',').next()?;
        r.split('x').nth(1)?.trim().parse().ok()
    };
    let variants: Vec<(usize, u32)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("#EXT-X-STREAM-INF:"))
        .filter_map(|(i, l)| Some((i, height(l)?)))
        .collect();
    let mut drop: HashSet<usize> = variants
        .iter()
        .filter(|(_, h)| *h > max_height)
        .map(|(i, _)| *i)
        .collect();
    if drop.len() == variants.len()
        && let Some((keep, _)) = variants.iter().min_by_key(|(_, h)| *h)
    {
        drop.remove(keep);
    }
    let mut out = String::with_capacity(text.len());
    let mut skip_uri = false;
    for (i, l) in lines.iter().enumerate() {
        if drop.contains(&i) {
            skip_uri = true;
            continue;
        }
        if skip_uri && !l.starts_with('#') && !l.is_empty() {
            skip_uri = false;
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Percent-encodes all but RFC 3986 unreserved characters (a JWT is
/// base64url and dots, so it passes unchanged).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let t =
            sign_token(&f.private, None, &claims(json!({ "single-use-id": "u1" }))).expect("sign");
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
        let der = pem_der(&public, "PUBLIC KEY").expect("der");
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
}
