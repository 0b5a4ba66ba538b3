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

mod keys;
mod playlist;

pub use keys::{KeyError, generate_key_pair, normalize_public_pem, sign_token};
pub use playlist::{limit_height, rewrite_playlist};

use crate::registry::{MAX_VIEWER_ID, Policy, Registry, RegistryError};
use crate::serve::geo::Locator;
use crate::serve::rules::{Breach, PolicyError, Rules};
use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keys::decoding_key;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

/// Response header that names why a request was refused (403).
pub const REFUSAL_HEADER: &str = "x-rungs-refusal";
/// Query parameter that carries the token on every URL of a private channel.
pub const TOKEN_PARAM: &str = "token";

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
    /// Reads the registry now (blocking) and again within
    /// [`ACCESS_REFRESH`](crate::registry::ACCESS_REFRESH) of every change (on the blocking pool, inside a
    /// tokio runtime), so requests never wait on the database.
    pub fn new(registry: Arc<Registry>, locator: Locator) -> Arc<Self> {
        let access = Arc::new(Self::empty(Some(registry.clone()), locator));
        registry.follow_access(&access, |access, _| match access.reload() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not read private channels from the registry");
                false
            }
        });
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

#[cfg(test)]
mod tests;
