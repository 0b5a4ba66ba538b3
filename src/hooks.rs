//! Authorization hooks: asks the operator's backend whether a publish or a
//! playback may go ahead, within a deadline, and remembers its answers
//! briefly. It never sends a stream key or a token, only what identifies
//! them.
//!
//! The backend gets a JSON POST and answers with its status: 2xx allows,
//! 4xx denies; a 5xx, a timeout or an unreachable backend follow
//! `hooks.on_timeout`. Answers are cached per question for `hooks.cache_s`,
//! so a player reloading playlists does not call the backend every time.
//!
//! A channel's policy may name its own publish or play hook; it replaces
//! the node's for that channel. The overrides are re-read from the
//! registry every second, so a change applies within one.

use crate::config::{HookPolicy, HooksConfig};
use crate::metrics::METRICS;
use crate::registry::Registry;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Questions remembered at most; past it the oldest half is forgotten.
const CACHE_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hooks.{field}: {reason}")]
    Config { field: &'static str, reason: String },
}

/// What the backend (or the timeout policy) decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

impl From<HookPolicy> for Decision {
    fn from(p: HookPolicy) -> Self {
        match p {
            HookPolicy::Allow => Decision::Allow,
            HookPolicy::Deny => Decision::Deny,
        }
    }
}

/// The body of a publish hook call.
#[derive(Debug, Serialize)]
pub struct PublishQuestion<'a> {
    pub channel: &'a str,
    /// `rtmp` or `whip`.
    pub protocol: &'a str,
    pub client: IpAddr,
    /// Names the stream key without revealing it: see [`key_id`].
    pub key_id: String,
}

/// The body of a play hook call.
#[derive(Debug, Serialize)]
pub struct PlayQuestion<'a> {
    pub channel: &'a str,
    pub client: IpAddr,
    /// The verified claims of the viewer's playback token, when the channel
    /// is private.
    pub claims: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Body<'a> {
    Publish(&'a PublishQuestion<'a>),
    Play(&'a PlayQuestion<'a>),
}

/// The node's hook client: one per node.
pub struct Hooks {
    client: reqwest::Client,
    publish_url: Option<reqwest::Url>,
    play_url: Option<reqwest::Url>,
    on_timeout: Decision,
    cache_for: Duration,
    cache: Mutex<HashMap<String, (Instant, Decision)>>,
    overrides: RwLock<Arc<Overrides>>,
}

/// Channels whose policy names hooks of their own.
#[derive(Default)]
struct Overrides {
    publish: HashMap<String, reqwest::Url>,
    play: HashMap<String, reqwest::Url>,
}

/// A stream key's identifier for the backend: the first 16 hex digits of
/// its SHA-256. It tells keys apart (after a rotation) and cannot be used to
/// publish.
pub fn key_id(stream_key: &str) -> String {
    let digest = Sha256::digest(stream_key.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `builder()` built with the host's trust store, and `true`; on a host that
/// has none (a minimal container), built with no roots at all, and `false`:
/// plain http:// still works, an https:// request fails with its own error,
/// and the node starts rather than refusing over a peer it may never call.
pub fn http_client(
    builder: impl Fn() -> reqwest::ClientBuilder,
) -> reqwest::Result<(reqwest::Client, bool)> {
    match builder().build() {
        Ok(client) => Ok((client, true)),
        Err(e) => {
            tracing::warn!(error = %e, "no system trust store: https:// hooks will fail");
            Ok((builder().tls_certs_only([]).build()?, false))
        }
    }
}

impl Hooks {
    pub fn new(cfg: &HooksConfig) -> Result<Hooks, HookError> {
        let url = |field: &'static str, s: &str| -> Result<Option<reqwest::Url>, HookError> {
            if s.is_empty() {
                return Ok(None);
            }
            let u = reqwest::Url::parse(s).map_err(|e| HookError::Config {
                field,
                reason: format!("not a URL: {e}"),
            })?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(HookError::Config {
                    field,
                    reason: "must be an http:// or https:// URL".into(),
                });
            }
            Ok(Some(u))
        };
        if !(1..=30_000).contains(&cfg.timeout_ms) {
            return Err(HookError::Config {
                field: "timeout_ms",
                reason: "must be 1..=30000".into(),
            });
        }
        if !(cfg.cache_s.is_finite() && (0.0..=3600.0).contains(&cfg.cache_s)) {
            return Err(HookError::Config {
                field: "cache_s",
                reason: "must be 0..=3600".into(),
            });
        }
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let (client, trust_store) = http_client(|| {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                // The backend's redirects are not followed: an answer is a status.
                .redirect(reqwest::redirect::Policy::none())
        })
        .map_err(|e| HookError::Config {
            field: "publish_url",
            reason: format!("HTTP client: {e}"),
        })?;
        if !trust_store {
            for (field, u) in [
                ("publish_url", &cfg.publish_url),
                ("play_url", &cfg.play_url),
            ] {
                if u.starts_with("https:") {
                    return Err(HookError::Config {
                        field,
                        reason: "an https:// URL, and this host has no CA certificates \
                                 to check it with (install ca-certificates)"
                            .into(),
                    });
                }
            }
        }
        Ok(Hooks {
            client,
            publish_url: url("publish_url", &cfg.publish_url)?,
            play_url: url("play_url", &cfg.play_url)?,
            on_timeout: cfg.on_timeout.into(),
            cache_for: Duration::from_secs_f64(cfg.cache_s),
            cache: Mutex::new(HashMap::new()),
            overrides: RwLock::new(Arc::default()),
        })
    }

    /// The node's hooks plus the channels' own, read from `registry` now
    /// (blocking) and again within
    /// [`ACCESS_REFRESH`](crate::registry::ACCESS_REFRESH) of every change.
    pub fn with_registry(
        cfg: &HooksConfig,
        registry: Arc<Registry>,
    ) -> Result<Arc<Hooks>, HookError> {
        let hooks = Arc::new(Hooks::new(cfg)?);
        registry.follow_access(&hooks, |hooks, registry| hooks.reload(registry));
        Ok(hooks)
    }

    /// Re-reads the channels' hook URLs. A URL that does not parse (the
    /// API checks them, a hand-edited database may not) leaves that channel
    /// on the node's hook, with a warning. False when the registry could
    /// not be read.
    fn reload(&self, registry: &Registry) -> bool {
        let policies = match registry.policies() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "could not re-read channel hooks from the registry");
                return false;
            }
        };
        let mut next = Overrides::default();
        for (channel, policy) in policies {
            for (url, into) in [
                (policy.publish_hook, &mut next.publish),
                (policy.play_hook, &mut next.play),
            ] {
                let Some(url) = url else { continue };
                match reqwest::Url::parse(&url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {
                        into.insert(channel.clone(), u);
                    }
                    _ => {
                        tracing::warn!(channel = %channel, "channel hook is not an http(s) URL; the node's hook applies")
                    }
                }
            }
        }
        *self.overrides.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        true
    }

    fn overrides(&self) -> Arc<Overrides> {
        self.overrides
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// No hooks: every question is allowed (routers built without a node).
    pub fn none() -> Hooks {
        Hooks::new(&HooksConfig::default()).expect("the default hook config is valid")
    }

    /// May this publisher go live? Allow when no publish hook is configured.
    pub async fn publish(&self, q: &PublishQuestion<'_>) -> Decision {
        let overrides = self.overrides();
        let Some(url) = overrides
            .publish
            .get(q.channel)
            .or(self.publish_url.as_ref())
        else {
            return Decision::Allow;
        };
        // The URL is part of the question: a channel moved to another
        // backend does not inherit the old backend's cached answers.
        let key = format!(
            "publish\0{url}\0{}\0{}\0{}\0{}",
            q.channel, q.protocol, q.client, q.key_id
        );
        self.ask("publish", url, key, &Body::Publish(q)).await
    }

    /// May this viewer play? Allow when no play hook is configured.
    pub async fn play(&self, q: &PlayQuestion<'_>) -> Decision {
        let overrides = self.overrides();
        let Some(url) = overrides.play.get(q.channel).or(self.play_url.as_ref()) else {
            return Decision::Allow;
        };
        let claims = q.claims.map(|c| c.to_string()).unwrap_or_default();
        let key = format!("play\0{url}\0{}\0{}\0{claims}", q.channel, q.client);
        self.ask("play", url, key, &Body::Play(q)).await
    }

    /// Whether any channel may have a publish hook: callers skip building a
    /// question (a registry read) when none can.
    pub fn has_publish_hook(&self) -> bool {
        self.publish_url.is_some() || !self.overrides().publish.is_empty()
    }

    pub fn has_play_hook(&self) -> bool {
        self.play_url.is_some() || !self.overrides().play.is_empty()
    }

    async fn ask(
        &self,
        hook: &'static str,
        url: &reqwest::Url,
        key: String,
        body: &Body<'_>,
    ) -> Decision {
        if let Some(d) = self.cached(&key) {
            METRICS
                .hook_calls
                .with_label_values(&[hook, "cached"])
                .inc();
            return d;
        }
        let started = Instant::now();
        let answer = self.client.post(url.clone()).json(body).send().await;
        let (decision, result) = match answer {
            Ok(r) if r.status().is_success() => (Decision::Allow, "allow"),
            Ok(r) if r.status().is_client_error() => (Decision::Deny, "deny"),
            Ok(r) => {
                tracing::warn!(hook, status = %r.status(), policy = ?self.on_timeout,
                    "authorization hook answered with a server error; following hooks.on_timeout");
                (self.on_timeout, "error")
            }
            Err(e) => {
                let what = if e.is_timeout() { "timeout" } else { "error" };
                // The URL is the operator's own; the error names no secret.
                tracing::warn!(hook, error = %e, policy = ?self.on_timeout,
                    "authorization hook did not answer; following hooks.on_timeout");
                (self.on_timeout, what)
            }
        };
        METRICS.hook_calls.with_label_values(&[hook, result]).inc();
        METRICS
            .hook_seconds
            .with_label_values(&[hook])
            .observe(started.elapsed().as_secs_f64());
        // Only the backend's own answers are remembered: after a timeout the
        // next question asks again.
        if matches!(result, "allow" | "deny") {
            self.remember(key, decision);
        }
        decision
    }

    fn cached(&self, key: &str) -> Option<Decision> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.cache_for)
            .map(|(_, d)| *d)
    }

    fn remember(&self, key: String, d: Decision) {
        if self.cache_for.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            let cache_for = self.cache_for;
            cache.retain(|_, (at, _)| at.elapsed() < cache_for);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A backend on loopback that answers every request with `status`
    /// (or never, for 0) and counts the requests and keeps the last body.
    fn backend(status: u16) -> (String, Arc<AtomicUsize>, Arc<Mutex<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}/hook", l.local_addr().expect("bound"));
        let calls = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(Mutex::new(String::new()));
        let (c, b) = (calls.clone(), last.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                // A thread per request: a silent answer must not keep the
                // next request from being counted.
                std::thread::spawn(move || {
                    // Head and JSON body may come in separate reads.
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let (mut seen, mut chunk) = (Vec::new(), [0u8; 4096]);
                    while !seen.ends_with(b"}") {
                        match s.read(&mut chunk) {
                            Ok(n) if n > 0 => seen.extend_from_slice(&chunk[..n]),
                            _ => break,
                        }
                    }
                    *b.lock().unwrap() = String::from_utf8_lossy(&seen).into_owned();
                    if status == 0 {
                        std::thread::sleep(Duration::from_secs(5));
                        return;
                    }
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                });
            }
        });
        (url, calls, last)
    }

    fn hooks(url: &str, policy: HookPolicy, cache_s: f64) -> Hooks {
        Hooks::new(&HooksConfig {
            publish_url: url.into(),
            play_url: url.into(),
            timeout_ms: 300,
            on_timeout: policy,
            cache_s,
        })
        .expect("valid hook config")
    }

    fn question(key_id: &str) -> PublishQuestion<'_> {
        PublishQuestion {
            channel: "c1",
            protocol: "rtmp",
            client: IpAddr::from([127, 0, 0, 1]),
            key_id: key_id.into(),
        }
    }

    #[tokio::test]
    async fn the_backend_status_decides_and_is_cached() {
        let (url, calls, last) = backend(204);
        let h = hooks(&url, HookPolicy::Deny, 10.0);
        assert_eq!(h.publish(&question("k1")).await, Decision::Allow);
        assert_eq!(h.publish(&question("k1")).await, Decision::Allow);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the second answer came from the cache"
        );
        let body = last.lock().unwrap().clone();
        assert!(
            body.contains(r#""event":"publish""#) && body.contains(r#""key_id":"k1""#),
            "{body}"
        );

        let (url, _, _) = backend(403);
        let h = hooks(&url, HookPolicy::Allow, 0.0);
        assert_eq!(h.publish(&question("k1")).await, Decision::Deny);
        let play = PlayQuestion {
            channel: "c1",
            client: IpAddr::from([127, 0, 0, 1]),
            claims: None,
        };
        assert_eq!(h.play(&play).await, Decision::Deny);
    }

    #[tokio::test]
    async fn silence_and_server_errors_follow_the_policy_within_the_deadline() {
        for policy in [HookPolicy::Deny, HookPolicy::Allow] {
            let (url, calls, _) = backend(0);
            let h = hooks(&url, policy, 10.0);
            let t = Instant::now();
            assert_eq!(h.publish(&question("k")).await, Decision::from(policy));
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            // A timeout is not remembered: the next question asks again.
            h.publish(&question("k")).await;
            assert_eq!(calls.load(Ordering::SeqCst), 2);
        }
        let (url, _, _) = backend(503);
        assert_eq!(
            hooks(&url, HookPolicy::Deny, 0.0)
                .publish(&question("k"))
                .await,
            Decision::Deny
        );
        assert_eq!(
            hooks(&url, HookPolicy::Allow, 0.0)
                .publish(&question("k"))
                .await,
            Decision::Allow
        );
    }

    #[test]
    fn no_url_allows_and_bad_config_is_refused() {
        let h = Hooks::new(&HooksConfig::default()).expect("defaults are valid");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(h.publish(&question("k"))), Decision::Allow);
        for (cfg, field) in [
            (
                HooksConfig {
                    publish_url: "ftp://x/".into(),
                    ..HooksConfig::default()
                },
                "publish_url",
            ),
            (
                HooksConfig {
                    play_url: "not a url".into(),
                    ..HooksConfig::default()
                },
                "play_url",
            ),
            (
                HooksConfig {
                    timeout_ms: 0,
                    ..HooksConfig::default()
                },
                "timeout_ms",
            ),
        ] {
            let e = Hooks::new(&cfg).err().expect("refused");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[tokio::test]
    async fn a_channel_hook_replaces_the_node_hook_for_that_channel_only() {
        let (deny, deny_calls, _) = backend(403);
        let (allow, allow_calls, _) = backend(204);
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Arc::new(Registry::open(dir.path()).expect("registry"));
        let own = registry.create("own", "standard").expect("create");
        let other = registry.create("other", "standard").expect("create");
        let policy = crate::registry::Policy {
            publish_hook: Some(deny.clone()),
            ..Default::default()
        };
        registry.set_policy(&own.id, &policy).expect("policy");
        let cfg = HooksConfig {
            publish_url: allow,
            timeout_ms: 300,
            ..HooksConfig::default()
        };
        let h = Hooks::with_registry(&cfg, registry.clone()).expect("hooks");
        fn ask(channel: &str) -> PublishQuestion<'_> {
            PublishQuestion {
                channel,
                protocol: "rtmp",
                client: IpAddr::from([127, 0, 0, 1]),
                key_id: "k".into(),
            }
        }
        let (own_id, other_id) = (own.id.as_str(), other.id.as_str());
        assert_eq!(h.publish(&ask(own_id)).await, Decision::Deny);
        assert_eq!(h.publish(&ask(other_id)).await, Decision::Allow);
        assert_eq!(deny_calls.load(Ordering::SeqCst), 1);
        assert_eq!(allow_calls.load(Ordering::SeqCst), 1);
        // No play hook anywhere: playback is not asked about.
        assert!(h.has_publish_hook() && !h.has_play_hook());

        // Cleared, the channel falls back to the node's hook.
        registry
            .set_policy(&own.id, &crate::registry::Policy::default())
            .expect("policy");
        h.reload(&registry);
        assert_eq!(h.publish(&ask(own_id)).await, Decision::Allow);
        assert_eq!(allow_calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_key_id_names_a_key_without_revealing_it() {
        let id = key_id("sk_secret");
        assert_eq!(id.len(), 16);
        assert!(!id.contains("secret"));
        assert_eq!(id, key_id("sk_secret"));
        assert_ne!(id, key_id("sk_other"));
    }
}
