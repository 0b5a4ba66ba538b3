//! A channel's playback rules beyond the private flag: the origins whose
//! pages may play it, and the networks and countries that may watch.
//!
//! Owns what a stored [`Policy`] means: [`normalize`] checks and tidies
//! what the API and the CLI store (so errors name the field), and
//! [`Rules`] is its compiled form, asked once per player request. Must
//! never look at tokens or log a client's address; a rule it cannot read
//! refuses rather than lets through.

use crate::registry::{Multitrack, Policy, TrackUse};
use crate::serve::geo::{self, Country, Locator};
use ipnet::IpNet;
use std::net::IpAddr;

/// A policy field that does not say what it must; `field` is its API name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PolicyError {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        field,
        reason: reason.into(),
    }
}

/// Changes to a policy, as `PATCH /api/v1/channels/{id}` and `rungs
/// channel update` give them: a field given replaces that field (an empty
/// list clears it; a hook given as `""` or `null` clears it), a field left
/// out stays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyPatch {
    pub allowed_origins: Option<Vec<String>>,
    pub allow_countries: Option<Vec<String>>,
    pub deny_countries: Option<Vec<String>>,
    pub allow_cidrs: Option<Vec<String>>,
    pub deny_cidrs: Option<Vec<String>>,
    pub publish_hook: Option<Option<String>>,
    pub play_hook: Option<Option<String>>,
    pub multitrack: Option<Multitrack>,
    pub tracks: Option<TrackUse>,
    pub max_height: Option<Option<u32>>,
    pub record: Option<Option<bool>>,
}

impl PolicyPatch {
    /// `to` with this patch's fields replaced (not yet normalized).
    pub fn apply(self, to: Policy) -> Policy {
        Policy {
            allowed_origins: self.allowed_origins.unwrap_or(to.allowed_origins),
            allow_countries: self.allow_countries.unwrap_or(to.allow_countries),
            deny_countries: self.deny_countries.unwrap_or(to.deny_countries),
            allow_cidrs: self.allow_cidrs.unwrap_or(to.allow_cidrs),
            deny_cidrs: self.deny_cidrs.unwrap_or(to.deny_cidrs),
            publish_hook: self.publish_hook.unwrap_or(to.publish_hook),
            play_hook: self.play_hook.unwrap_or(to.play_hook),
            multitrack: self.multitrack.unwrap_or(to.multitrack),
            tracks: self.tracks.unwrap_or(to.tracks),
            max_height: self.max_height.unwrap_or(to.max_height),
            record: self.record.unwrap_or(to.record),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == PolicyPatch::default()
    }

    /// Whether it sets a country list to something: what needs a GeoIP database.
    pub fn sets_countries(&self) -> bool {
        [&self.allow_countries, &self.deny_countries]
            .iter()
            .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
    }
}

/// `policy` checked and in the form it is stored and shown: origins lower
/// case without a default port or a trailing `/`, countries upper case,
/// networks with their host bits cleared, duplicates dropped, an empty hook
/// URL as none.
pub fn normalize(policy: Policy) -> Result<Policy, PolicyError> {
    let each = |field: &'static str,
                list: Vec<String>,
                f: &dyn Fn(&str) -> Result<String, String>|
     -> Result<Vec<String>, PolicyError> {
        let mut out: Vec<String> = Vec::with_capacity(list.len());
        for item in list {
            let v = f(&item).map_err(|why| invalid(field, format!("{item:?} {why}")))?;
            if !out.contains(&v) {
                out.push(v);
            }
        }
        Ok(out)
    };
    let country = |s: &str| {
        geo::country(s.trim())
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .ok_or_else(|| "is not an ISO 3166-1 alpha-2 code (two letters)".to_string())
    };
    let network = |s: &str| {
        crate::config::parse_network(s)
            .map(|n| n.to_string())
            .ok_or_else(|| "is not an address or a network (CIDR)".to_string())
    };
    Ok(Policy {
        allowed_origins: each("allowed_origins", policy.allowed_origins, &origin)?,
        allow_countries: each("allow_countries", policy.allow_countries, &country)?,
        deny_countries: each("deny_countries", policy.deny_countries, &country)?,
        allow_cidrs: each("allow_cidrs", policy.allow_cidrs, &network)?,
        deny_cidrs: each("deny_cidrs", policy.deny_cidrs, &network)?,
        publish_hook: hook("publish_hook", policy.publish_hook)?,
        play_hook: hook("play_hook", policy.play_hook)?,
        multitrack: policy.multitrack,
        tracks: policy.tracks,
        max_height: match policy.max_height {
            Some(h) if !(16..=8640).contains(&h) => {
                return Err(invalid(
                    "max_height",
                    format!("{h} is not a picture height in lines (16 to 8640)"),
                ));
            }
            h => h,
        },
        record: policy.record,
    })
}

/// An origin as browsers send it: `scheme://host[:port]`, lower case, no
/// default port (`https://a.example:443` is `https://a.example`).
fn origin(s: &str) -> Result<String, String> {
    const FORM: &str = "is not an origin: give scheme://host[:port], no path";
    let s = s.trim();
    if s == "*" {
        return Err("is not an origin: an empty list already allows every origin".into());
    }
    let (scheme, rest) = s.split_once("://").ok_or(FORM)?;
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    // One trailing slash is what a copied address bar has; more is a path.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if !scheme_ok
        || rest.is_empty()
        || rest
            .bytes()
            .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\') || !b.is_ascii_graphic())
    {
        return Err(FORM.into());
    }
    let (host, port) = match rest.strip_prefix('[') {
        // An IPv6 literal: `[2001:db8::1]` or `[2001:db8::1]:8443`.
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or(FORM)?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(FORM.into());
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(FORM)?),
            };
            (&rest[..addr.len() + 2], port)
        }
        None => match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    if host.is_empty() {
        return Err(FORM.into());
    }
    let scheme = scheme.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    let port = match port {
        None => None,
        Some(p) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(FORM)?;
            let default = matches!((scheme.as_str(), n), ("http", 80) | ("https", 443));
            (!default).then_some(n)
        }
    };
    Ok(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

fn hook(field: &'static str, url: Option<String>) -> Result<Option<String>, PolicyError> {
    let Some(url) = url.map(|u| u.trim().to_string()).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| invalid(field, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(invalid(field, "must be an http:// or https:// URL"));
    }
    Ok(Some(url))
}

/// Which rule a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    /// Its page's origin is not among the channel's allowed origins (or it
    /// named none).
    Origin,
    /// Its address is in a denied network, or outside every allowed one.
    Network,
    /// Its country is denied, or not allowed, or unknown where only some
    /// countries are allowed.
    Region,
    /// The stored policy does not read (a hand-edited database).
    Unreadable,
}

/// A channel's playback rules, compiled once per registry refresh. Every
/// list empty means no restriction of that kind.
#[derive(Debug, Default)]
pub struct Rules {
    origins: Vec<String>,
    allow_countries: Vec<Country>,
    deny_countries: Vec<Country>,
    allow_networks: Vec<IpNet>,
    deny_networks: Vec<IpNet>,
    unreadable: bool,
}

impl Rules {
    /// `None` when the policy restricts no playback (hooks are not ours).
    pub fn compile(policy: &Policy) -> Result<Option<Rules>, PolicyError> {
        if !policy.restricts_playback() {
            return Ok(None);
        }
        let p = normalize(policy.clone())?;
        // normalize() left only valid entries, so these drop nothing.
        let countries = |l: &[String]| l.iter().filter_map(|c| geo::country(c)).collect();
        let networks = |l: &[String]| {
            l.iter()
                .filter_map(|n| crate::config::parse_network(n))
                .collect()
        };
        Ok(Some(Rules {
            allow_countries: countries(&p.allow_countries),
            deny_countries: countries(&p.deny_countries),
            allow_networks: networks(&p.allow_cidrs),
            deny_networks: networks(&p.deny_cidrs),
            origins: p.allowed_origins,
            unreadable: false,
        }))
    }

    /// Refuses every request: what a policy that does not read becomes.
    pub fn unreadable() -> Rules {
        Rules {
            unreadable: true,
            ..Rules::default()
        }
    }

    /// Checks one request. `client` is none only where the server has no
    /// socket address (in-process tests): then no allow list is met.
    /// `origin` is the request's `Origin`, else its `Referer`'s origin.
    pub fn check(
        &self,
        client: Option<IpAddr>,
        origin: Option<&str>,
        locator: &Locator,
    ) -> Result<(), Breach> {
        if self.unreadable {
            return Err(Breach::Unreadable);
        }
        if client.is_some_and(|a| geo::in_networks(&self.deny_networks, a))
            || !(self.allow_networks.is_empty()
                || client.is_some_and(|a| geo::in_networks(&self.allow_networks, a)))
        {
            return Err(Breach::Network);
        }
        if !(self.allow_countries.is_empty() && self.deny_countries.is_empty()) {
            let country = client.and_then(|a| locator.country(a));
            let denied = country.is_some_and(|c| self.deny_countries.contains(&c));
            let allowed = self.allow_countries.is_empty()
                || country.is_some_and(|c| self.allow_countries.contains(&c));
            if denied || !allowed {
                return Err(Breach::Region);
            }
        }
        if !self.origin_allowed(origin) {
            return Err(Breach::Origin);
        }
        Ok(())
    }

    /// Whether the channel lists allowed origins (CORS then echoes only those).
    pub fn limits_origins(&self) -> bool {
        !self.origins.is_empty() || self.unreadable
    }

    /// With allowed origins, whether `origin` is one; a request without an
    /// origin is not (strict, like a token's origin claim). Without, any.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        if self.unreadable {
            return false;
        }
        self.origins.is_empty()
            || origin.is_some_and(|o| self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("address"))
    }

    fn rules(p: Policy) -> Rules {
        Rules::compile(&p).expect("valid").expect("restricts")
    }

    #[test]
    fn origins_are_normalized_and_checked() {
        for (given, want) in [
            ("https://A.Example", "https://a.example"),
            ("https://a.example/", "https://a.example"),
            ("https://a.example:443", "https://a.example"),
            ("http://a.example:80", "http://a.example"),
            ("https://a.example:8443", "https://a.example:8443"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[2001:DB8::1]:8080", "http://[2001:db8::1]:8080"),
            ("capacitor://localhost", "capacitor://localhost"),
        ] {
            assert_eq!(origin(given).as_deref(), Ok(want), "{given}");
        }
        for bad in [
            "",
            "*",
            "a.example",
            "https://",
            "https://a.example/path",
            "https://a.example//",
            "https://a.example?x",
            "https://user@a.example",
            "https://a.example:port",
            "https://a.example:99999",
            "https://a.example:+80",
            "https://[nope]",
            "https://a example",
            "1http://a.example",
        ] {
            assert!(origin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn normalize_names_the_field_and_tidies() {
        let p = normalize(Policy {
            allowed_origins: vec!["https://A.example/".into(), "https://a.example".into()],
            allow_countries: vec!["fr".into(), " De ".into(), "FR".into()],
            deny_cidrs: vec!["10.1.2.3/8".into(), "203.0.113.7".into()],
            play_hook: Some(" ".into()),
            publish_hook: Some("https://backend.example/publish".into()),
            ..Policy::default()
        })
        .expect("valid");
        assert_eq!(p.allowed_origins, ["https://a.example"]);
        assert_eq!(p.allow_countries, ["FR", "DE"]);
        assert_eq!(p.deny_cidrs, ["10.0.0.0/8", "203.0.113.7/32"]);
        assert_eq!(p.play_hook, None);
        assert_eq!(
            p.publish_hook.as_deref(),
            Some("https://backend.example/publish")
        );
        let field = |p: Policy| normalize(p).err().map(|e| e.field);
        assert_eq!(
            field(Policy {
                allowed_origins: vec!["https://a.example/x".into()],
                ..Policy::default()
            }),
            Some("allowed_origins")
        );
        assert_eq!(
            field(Policy {
                deny_countries: vec!["FRA".into()],
                ..Policy::default()
            }),
            Some("deny_countries")
        );
        assert_eq!(
            field(Policy {
                allow_cidrs: vec!["10.0.0.0/40".into()],
                ..Policy::default()
            }),
            Some("allow_cidrs")
        );
        assert_eq!(
            field(Policy {
                play_hook: Some("ftp://backend.example/".into()),
                ..Policy::default()
            }),
            Some("play_hook")
        );
        assert_eq!(
            field(Policy {
                publish_hook: Some("not a url".into()),
                ..Policy::default()
            }),
            Some("publish_hook")
        );
    }

    #[test]
    fn a_patch_replaces_the_fields_it_gives() {
        let before = Policy {
            allowed_origins: vec!["https://a.example".into()],
            deny_countries: vec!["FR".into()],
            play_hook: Some("https://backend.example/play".into()),
            ..Policy::default()
        };
        let patch = PolicyPatch {
            deny_countries: Some(vec![]),
            allow_cidrs: Some(vec!["10.0.0.0/8".into()]),
            play_hook: Some(None),
            ..PolicyPatch::default()
        };
        assert!(!patch.is_empty() && !patch.sets_countries());
        let after = patch.apply(before);
        assert_eq!(after.allowed_origins, ["https://a.example"]);
        assert!(after.deny_countries.is_empty());
        assert_eq!(after.allow_cidrs, ["10.0.0.0/8"]);
        assert_eq!(after.play_hook, None);
        assert!(PolicyPatch::default().is_empty());
        assert!(
            PolicyPatch {
                allow_countries: Some(vec!["FR".into()]),
                ..PolicyPatch::default()
            }
            .sets_countries()
        );
    }

    #[test]
    fn networks_deny_before_they_allow() {
        let l = Locator::direct();
        let r = rules(Policy {
            allow_cidrs: vec!["10.0.0.0/8".into()],
            deny_cidrs: vec!["10.9.0.0/16".into()],
            ..Policy::default()
        });
        assert_eq!(r.check(ip("10.1.0.1"), None, &l), Ok(()));
        assert_eq!(r.check(ip("10.9.0.1"), None, &l), Err(Breach::Network));
        assert_eq!(r.check(ip("11.0.0.1"), None, &l), Err(Breach::Network));
        assert_eq!(r.check(None, None, &l), Err(Breach::Network));
        let deny_only = rules(Policy {
            deny_cidrs: vec!["2001:db8::/32".into()],
            ..Policy::default()
        });
        assert_eq!(
            deny_only.check(ip("2001:db8::5"), None, &l),
            Err(Breach::Network)
        );
        assert_eq!(deny_only.check(ip("192.0.2.1"), None, &l), Ok(()));
        assert_eq!(deny_only.check(None, None, &l), Ok(()));
    }

    #[test]
    fn without_a_database_no_country_is_known() {
        let l = Locator::direct();
        let allow = rules(Policy {
            allow_countries: vec!["FR".into()],
            ..Policy::default()
        });
        assert_eq!(
            allow.check(ip("203.0.113.7"), None, &l),
            Err(Breach::Region)
        );
        let deny = rules(Policy {
            deny_countries: vec!["FR".into()],
            ..Policy::default()
        });
        assert_eq!(deny.check(ip("203.0.113.7"), None, &l), Ok(()));
    }

    #[test]
    fn allowed_origins_are_strict() {
        let l = Locator::direct();
        let r = rules(Policy {
            allowed_origins: vec!["https://a.example".into(), "http://b.example:8080".into()],
            ..Policy::default()
        });
        assert!(r.limits_origins());
        assert_eq!(
            r.check(ip("192.0.2.1"), Some("https://a.example"), &l),
            Ok(())
        );
        assert_eq!(
            r.check(ip("192.0.2.1"), Some("https://A.EXAMPLE"), &l),
            Ok(())
        );
        assert_eq!(
            r.check(ip("192.0.2.1"), Some("http://b.example:8080"), &l),
            Ok(())
        );
        for wrong in [
            None,
            Some("https://b.example"),
            Some("http://a.example"),
            Some("https://a.example:8443"),
            Some("null"),
        ] {
            assert_eq!(
                r.check(ip("192.0.2.1"), wrong, &l),
                Err(Breach::Origin),
                "{wrong:?}"
            );
        }
        assert!(Rules::compile(&Policy::default()).expect("valid").is_none());
        let unreadable = Rules::unreadable();
        assert_eq!(
            unreadable.check(ip("192.0.2.1"), Some("https://a.example"), &l),
            Err(Breach::Unreadable)
        );
        assert!(unreadable.limits_origins() && !unreadable.origin_allowed(None));
    }
}
